"""The `schedlog` command line's output: tables, lines and a progress bar, built, not printed.

`cli.py` prints what these build (the progress bar draws only on the console it is handed).
Every cell of user data goes in as `Text`, so rich never reads markup in a job's name,
arguments or error. (Front door.)
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Self

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from schedlog.actors.runner import NOT_RUN_CANCELED
from schedlog.projections.queries import MAX_LIMIT

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import TracebackType

    from schedlog.projections.queries import ScheduledFunctions, Stats

__all__ = [
    "CHILDREN_LISTED",
    "PIPE_WIDTH",
    "ReplayProgress",
    "as_of_lines",
    "cancel_all_subject",
    "collect",
    "console",
    "counts_text",
    "document_table",
    "documents_table",
    "first_line",
    "iso_ms",
    "jobs",
    "relations",
    "stats_table",
    "timeline_table",
]

CHILDREN_LISTED = 10
"""`history` lists up to this many children by id; beyond, it gives their number."""
PIPE_WIDTH = 200
"""Piped output gets tables this wide rather than rich's default of 80 columns."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def console(*, stderr: bool = False) -> Console:
    """Return a console on stdout (or stderr), wide when piped (a terminal sets its own)."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(width=PIPE_WIDTH if wide else None, highlight=False, stderr=stderr)


def iso_ms(ms: float | None) -> str:
    """Format epoch milliseconds as ISO 8601 UTC (`2027-01-01T00:00:00.000Z`); '' for None."""
    if ms is None:
        return ""
    moment = _EPOCH + timedelta(milliseconds=ms)  # exact, unlike fromtimestamp(ms / 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def first_line(text: str | None) -> str:
    """Return the first line of `text` (an error's message without its traceback)."""
    return text.splitlines()[0] if text else ""


def _add_row(table: Table, *cells: str) -> None:
    table.add_row(*(Text(cell) for cell in cells))  # Text: no rich markup in user data


def _json(value: object) -> str:
    return orjson.dumps(value, default=str).decode()


def documents_table(title: str, documents: list[dict[str, Any]], *, more: bool = False) -> Table:
    """Return a table of `_scheduled_functions` documents; `more`: others match too."""
    caption = f"the first {len(documents)}; more match (raise --limit)" if more else None
    table = Table(title=Text(title), caption=Text(caption) if caption else None)
    for column in ("id", "name", "state", "scheduledTime", "completedTime", "error"):
        table.add_column(column, overflow="fold")
    for doc in documents:
        state = doc["state"]
        _add_row(
            table,
            doc["_id"],
            doc["name"],
            state["kind"],
            iso_ms(doc["scheduledTime"]),
            iso_ms(doc.get("completedTime")),
            first_line(state.get("error")),
        )
    return table


def document_table(doc: dict[str, Any]) -> Table:
    """Return one document as a two-column field/value table."""
    table = Table(title=Text(f"scheduled function {doc['_id']}"), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    state = doc["state"]
    rows = [
        ("_id", doc["_id"]),
        ("name", doc["name"]),
        ("state", state["kind"]),
        ("args", _json(doc.get("args", []))),
        ("kwargs", _json(doc["kwargs"]) if "kwargs" in doc else ""),
        ("_creationTime", iso_ms(doc["_creationTime"])),
        ("scheduledTime", iso_ms(doc["scheduledTime"])),
        ("completedTime", iso_ms(doc.get("completedTime"))),
        ("error", state.get("error") or ""),
    ]
    for field, value in rows:
        if value:
            _add_row(table, field, value)
    return table


def _call(entry: Mapping[str, Any]) -> str:
    args = [_json(a) for a in entry.get("args") or []]
    args += [f"{k}={_json(v)}" for k, v in (entry.get("kwargs") or {}).items()]
    return f"{entry.get('name', '?')}({', '.join(args)})"


def timeline_table(title: str, entries: list[dict[str, Any]]) -> Table:
    """Return a job's history as a timeline: time, event, attempt, node, detail per event.

    The attempt of a `Completed` or `Canceled` is that of the last `Started` before it; the
    node shows where each attempt started. Errors show their first line only.
    """
    table = Table(title=Text(title))
    for column in ("time", "event", "attempt", "node", "detail"):
        table.add_column(column, overflow="fold")
    attempt, running = "", False
    unrun = any(e["type"] == "Completed" and e.get("error") == NOT_RUN_CANCELED for e in entries)
    for entry in entries:
        kind, node, detail = entry["type"], "", ""
        match kind:
            case "Scheduled":
                due = iso_ms(entry.get("scheduled_time_ms"))
                detail = f"{_call(entry)}, {entry.get('kind', '')}, due {due}"
            case "Started":
                attempt, running, node = str(entry.get("attempt", "")), True, entry["node_id"]
                lease = entry.get("lease_until_ms")
                detail = f"lease until {iso_ms(lease)}" if lease is not None else ""
            case "Retried":
                attempt, running = str(entry.get("attempt", "")), False
                detail = f"next run {iso_ms(entry.get('next_run_ms'))}: "
                detail += first_line(entry.get("error"))
            case "Canceled":
                if running:
                    detail = (
                        "claimed ahead, before it was due: it does not run"
                        if unrun
                        else "while in progress (not interrupted)"
                    )
            case "Completed":
                error = first_line(entry.get("error"))
                detail = f"{entry.get('outcome')}: {error}" if error else str(entry.get("outcome"))
                running = False
            case _:
                detail = _json({k: v for k, v in entry.items() if k not in {"type", "time"}})
        shown = attempt if kind in {"Started", "Retried", "Completed", "Canceled"} else ""
        _add_row(table, iso_ms(entry["time"]), kind, shown, node or "", detail)
    return table


def relations(job_id: str, parent: str | None, children: list[str]) -> list[str]:
    """Return the `parent:` and `children:` lines printed under a job's timeline."""
    lines = [f"parent: {parent or 'none (scheduled by application code)'}"]
    if not children:
        lines.append("children: none")
    elif len(children) <= CHILDREN_LISTED:
        lines.append(f"children: {', '.join(children)}")
    else:
        lines.append(
            f"children: {len(children)} (first: {children[0]}, last: {children[-1]}; "
            f"`schedlog ls --parent {job_id}` lists those still in the view)"
        )
    return lines


def counts_text(counts: Mapping[str, int]) -> str:
    """Return `pending 2, inProgress 0, …, total 7` for a mapping of state to count."""
    parts = [f"{state} {n}" for state, n in counts.items()]
    return ", ".join([*parts, f"total {sum(counts.values())}"])


def stats_table(stats: Stats, now_ms: int) -> Table:
    """Return the `stats` table: jobs by state, then running, lag and health (with thresholds)."""
    table = Table(title=Text(f"schedlog stats at {iso_ms(now_ms)}"))
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_column("note")
    rows: Iterable[tuple[str, str, str]] = [
        *((state, str(n), "jobs") for state, n in stats.counts.items()),
        ("total", str(sum(stats.counts.values())), "jobs in the view"),
        ("running", str(stats.running), "functions in progress"),
        ("lag", f"{stats.lag_ms / 1000:.1f} s", "how long the oldest due job has waited"),
        ("health", stats.health, "healthy <= 20 s behind, warning <= 300 s, error beyond"),
    ]
    for row in rows:
        _add_row(table, *row)
    return table


def as_of_lines(as_of_ms: int, applied: int, stats: Stats) -> list[str]:
    """Return the lines printed under `replay --as-of`'s table: events, counts, lag then."""
    return [
        f"as of {iso_ms(as_of_ms)} ({as_of_ms}): {applied} job events applied",
        f"jobs then: {counts_text(stats.counts)}",
        f"lag then: {stats.lag_ms / 1000:.1f} s ({stats.health})",
    ]


def jobs(n: int) -> str:
    """Return `1 job` or `n jobs`."""
    return f"{n} job" if n == 1 else f"{n} jobs"


def cancel_all_subject(name: str | None, before_ms: int | None) -> str:
    """Return which jobs `cancel-all` cancels: `pending or running, of x, due before T`."""
    what = "pending or running"
    if name is not None:
        what += f", of {name}"
    if before_ms is not None:
        what += f", due before {iso_ms(before_ms)}"
    return what


class ReplayProgress:
    """A replay's `progress(read, total)` callback: a bar once the log spans several pages.

    It draws on `console` only when that is a terminal; a log read in one page shows nothing.
    Use it as a context manager so the bar is stopped (and the cursor restored) at the end.
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, read: int, total: int) -> None:
        """Move the bar to `read` of `total` log positions, starting it if the log is long."""
        if self._bar is None:
            if read >= total or not self._console.is_terminal:
                return
            self._bar = Progress(
                TextColumn("replaying the log"),
                BarColumn(),
                MofNCompleteColumn(),
                console=self._console,
            )
            self._bar.start()
            self._task = self._bar.add_task("replay", total=total)
        if self._task is not None:
            self._bar.update(self._task, completed=read, total=total)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()


def collect(
    view: ScheduledFunctions, limit: int, **filters: Any
) -> tuple[list[dict[str, Any]], bool]:
    """Return up to `limit` documents of `view.query(**filters)`, and whether more match."""
    documents: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        want = min(limit - len(documents), MAX_LIMIT)
        page = view.query(**filters, limit=want, cursor=cursor)
        documents.extend(page.items)
        cursor = page.cursor
        if cursor is None or len(documents) >= limit:
            return documents, cursor is not None
