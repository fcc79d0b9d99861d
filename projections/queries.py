"""Queries of `_scheduled_functions` by state, name and time, and per-job history (read side)."""

from __future__ import annotations

import base64
import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import orjson

from schedlog.events import InvalidQueryError, JobState, ScheduledFunction
from schedlog.events.function import canonical_id
from schedlog.events.validation import is_plain_int, is_text, unencodable
from schedlog.projections.rows import to_document
from schedlog.projections.schema import COUNTS, LINKS, TABLE
from schedlog.projections.sql import Dialect

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from schedlog.projections.sql import Db

__all__ = [
    "DueJob",
    "Page",
    "ScheduledFunctions",
    "Stats",
    "health_of",
    "history_entries",
    "job_key",
]

MAX_LIMIT = 1000
_ORDERS = {"asc": ("ASC", ">"), "desc": ("DESC", "<")}
_STATES = frozenset(s.value for s in JobState)


def job_key(job_id: object, label: str) -> str:
    """Return `job_id` as the view stores ids: a UUID's canonical text (S3).

    `load_job` reads any text `uuid.UUID` parses (upper case, no hyphens, braces, `urn:uuid:`),
    so the view's lookups take the same forms; text that is no UUID is kept as it is (no job
    has it). A value that is not a str, or a blank one, is refused, naming `label`.
    """
    if not isinstance(job_id, str):
        raise InvalidQueryError(f"{label} must be a str, got {type(job_id).__name__}")
    if not is_text(job_id):
        raise InvalidQueryError(f"{label} must not be blank, got {job_id!r}")
    if (why := unencodable(job_id)) is not None:
        raise InvalidQueryError(f"{label} {why}")
    return canonical_id(job_id)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of documents; pass `cursor` back for the next page (None at the end)."""

    items: list[dict[str, Any]]
    cursor: str | None


_MIN_MS, _MAX_MS = -(2**63), 2**63 - 1
"""The view's integers (times, positions) are 64-bit: a filter beyond them is clamped to them."""
HEALTHY_LAG_MS = 20_000
WARNING_LAG_MS = 300_000


def health_of(lag_ms: int) -> str:
    """Return Convex's health word for a scheduler lag: healthy, warning or error."""
    if lag_ms <= HEALTHY_LAG_MS:
        return "healthy"
    return "warning" if lag_ms <= WARNING_LAG_MS else "error"


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts of jobs by state, the lag of the oldest due job not started, and a health word."""

    counts: dict[str, int]
    lag_ms: int
    running: int
    health: str


class DueJob(NamedTuple):
    """A pending job as the timer sees it: when to run it, in which order, and its id.

    A named tuple, so the timer's heap compares them in C (a dataclass's generated `__lt__`
    ran about ten times per job in a drain).
    """

    run_at: int
    seq: int
    job_id: str


def _encode_cursor(scheduled_time: int, seq: int, order: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([scheduled_time, seq, order])).decode()


def _decode_cursor(cursor: object, order: str) -> tuple[int, int]:
    """Return the (scheduled_time, seq) a page ended at; refuse a cursor of the other order.

    A cursor of the other order went on from its row the other way: it gave rows of the
    pages before again, without a word. (Filters are not in it: pass the same ones back.)
    A cursor of an older version, `[time, seq]`, has no order and goes on in the query's.
    """
    if not isinstance(cursor, str):
        raise InvalidQueryError(f"cursor must be a str this view returned, got {cursor!r}")
    try:
        time, seq, *rest = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError) as e:
        raise InvalidQueryError(f"cursor {cursor!r} is not one this view returned") from e
    its_order = rest[0] if len(rest) == 1 else order  # [time, seq]: a cursor of an older version
    if (
        not all(is_plain_int(v) and _MIN_MS <= v <= _MAX_MS for v in (time, seq))
        or len(rest) > 1
        or not isinstance(its_order, str)
        or its_order not in _ORDERS
    ):
        raise InvalidQueryError(f"cursor {cursor!r} is not one this view returned")
    if its_order != order:
        raise InvalidQueryError(
            f"cursor {cursor!r} continues a query in {its_order!r} order, not {order!r}: "
            "pass it back with the same order and filters"
        )
    return time, seq


class ScheduledFunctions:
    """Reads the `_scheduled_functions` view: `get` one document, `query` pages of them."""

    def __init__(self, db: Db, table: str = TABLE, *, counted: bool = True) -> None:
        self._db = db
        self._table = table
        self._counted = counted  # the live view keeps counts by trigger; a replayed one does not
        self.name_of: Callable[[object], str] | None = None
        """The registered name of a function object (the App sets it): `query(name=fn)`."""

    def _rows(self, sql: str, params: Iterable[object]) -> list[Any]:
        with self._db.transaction(commit=False) as c:
            c.execute(sql, list(params))
            return list(c.fetchall())

    def get(self, job_id: str) -> dict[str, Any] | None:
        """Return the document of `job_id`, or None if there is none (S30: reads own writes)."""
        key = job_key(job_id, "job id")
        rows = self._rows(f"SELECT * FROM {self._table} WHERE id = ?", [key])  # noqa: S608
        return to_document(rows[0]) if rows else None

    def query(  # noqa: PLR0913, PLR0917 - the filters of semantics.md
        self,
        state: str | None = None,
        name: str | Callable[..., Any] | None = None,
        scheduled_after_ms: float | None = None,
        scheduled_before_ms: float | None = None,
        order: str = "asc",
        limit: int = 100,
        cursor: str | None = None,
        parent_id: str | None = None,
    ) -> Page:
        """Return a page of documents by `scheduledTime`, then scheduling order.

        `scheduled_after_ms` is inclusive, `scheduled_before_ms` exclusive; `parent_id` keeps
        the jobs that job scheduled.
        """
        ref: object = name  # typed; checked as the caller may pass anything
        if ref is not None and not isinstance(ref, str) and callable(ref) and self.name_of:
            name = self.name_of(ref)  # the function, as `cancel_all` and the schedulers take it
        where, params = self._filters(
            state, cast("str | None", name), scheduled_after_ms, scheduled_before_ms
        )
        if parent_id is not None:
            where.append("parent_id = ?")
            params.append(job_key(parent_id, "parent_id"))
        given: object = order  # typed str; checked as the caller passed it
        if not isinstance(given, str) or given not in _ORDERS:
            raise InvalidQueryError(f"order must be 'asc' or 'desc', got {order!r}")
        direction, cmp = _ORDERS[order]
        if not is_plain_int(limit) or not 1 <= limit <= MAX_LIMIT:
            raise InvalidQueryError(f"limit must be an int from 1 to {MAX_LIMIT}, got {limit!r}")
        if cursor is not None:
            where.append(f"(scheduled_time, seq) {cmp} (?, ?)")
            params.extend(_decode_cursor(cursor, order))
        sql = (
            f"SELECT * FROM {self._table}"  # noqa: S608 - every value is a parameter
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + f" ORDER BY scheduled_time {direction}, seq {direction} LIMIT ?"
        )
        rows = self._rows(sql, [*params, limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if more:  # then rows holds `limit` of them (at least one)
            next_cursor = _encode_cursor(rows[-1]["scheduled_time"], rows[-1]["seq"], order)
        return Page([to_document(r) for r in rows], next_cursor)

    @staticmethod
    def _filters(
        state: str | None,
        name: str | None,
        after: float | None,
        before: float | None,
    ) -> tuple[list[str], list[object]]:
        where: list[str] = []
        params: list[object] = []
        if state is not None:
            given: object = state  # typed str; checked as the caller passed it
            if not isinstance(given, str) or given not in _STATES:
                raise InvalidQueryError(
                    f"state must be one of {', '.join(sorted(_STATES))}, got {state!r}"
                )
            where.append("state = ?")
            params.append(state)
        if name is not None:
            if not isinstance(name, str):
                raise InvalidQueryError(
                    f"name must be a function's registered name (a str) or the function, "
                    f"got {name!r}"
                )
            if (why := unencodable(name)) is not None:
                raise InvalidQueryError(f"name {why}")
            where.append("name = ?")
            params.append(name)
        for value, clause, label in (
            (after, "scheduled_time >= ?", "scheduled_after_ms"),
            (before, "scheduled_time < ?", "scheduled_before_ms"),
        ):
            if value is None:
                continue
            number: object = value
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise InvalidQueryError(f"{label} must be a number of ms, got {value!r}")
            if isinstance(number, float) and math.isnan(number):
                raise InvalidQueryError(f"{label} must be a number of ms, got {value!r}")
            where.append(clause)
            params.append(min(max(value, _MIN_MS), _MAX_MS) if isinstance(value, int) else value)
        return where, params

    def due(self, before_ms: int, limit: int, after: tuple[int, int] | None = None) -> list[DueJob]:
        """Return up to `limit` pending jobs to run before `before_ms`, in start order (S13).

        With `after`, only the jobs whose `(run_at, seq)` is greater: the index's next page.
        """
        keyset = "" if after is None else " AND (run_at, seq) > (?, ?)"
        rows = self._rows(
            f"SELECT id, run_at, seq FROM {self._table}{self._due_index()} "  # noqa: S608
            f"WHERE state = 'pending' AND run_at < ?{keyset} ORDER BY run_at, seq LIMIT ?",
            [before_ms, *(after or ()), limit],
        )
        return [DueJob(r["run_at"], r["seq"], r["id"]) for r in rows]

    def _due_index(self) -> str:
        """Name the due index on SQLite: without statistics its planner prefers `by_state`.

        With `state = 'pending'` an equality, SQLite picks `(state, scheduled_time, seq)` and
        then sorts every pending job by `run_at`: 30 ms at 100,000 jobs, 460 ms at 1,000,000
        (bench/audit_bench.py). PostgreSQL is left to its planner (not measured by the bench).
        """
        return f" INDEXED BY {self._table}_due" if self._db.dialect is Dialect.SQLITE else ""

    def children(self, job_id: str) -> list[str]:
        """Return the ids of the jobs `job_id` scheduled, in scheduling order (kept for good)."""
        rows = self._rows(
            f"SELECT child_id FROM {LINKS} WHERE parent_id = ? ORDER BY seq",  # noqa: S608
            [job_key(job_id, "job id")],
        )
        return [r["child_id"] for r in rows]

    def stats(self, now_ms: int) -> Stats:
        """Return counts by state, the scheduler's lag and how many jobs are running."""
        with self._db.transaction(commit=False) as c:
            if self._counted:
                c.execute(f"SELECT state, n FROM {COUNTS}")  # noqa: S608
            else:
                c.execute(f"SELECT state, COUNT(*) AS n FROM {self._table} GROUP BY state")  # noqa: S608
            counts = dict.fromkeys(sorted(_STATES), 0)
            counts.update({r["state"]: r["n"] for r in c.fetchall()})
            c.execute(
                f"SELECT run_at FROM {self._table}{self._due_index()} "  # noqa: S608
                "WHERE state = 'pending' AND run_at <= ? ORDER BY run_at LIMIT 1",
                [now_ms],
            )
            row = c.fetchone()
        lag = 0 if row is None else now_ms - row["run_at"]
        return Stats(counts, lag, counts[JobState.IN_PROGRESS.value], health_of(lag))

    def unfinished_ids(self, name: str | None, before_ms: float | None) -> list[str]:
        """Return the ids of pending and running jobs matching the filters (for cancel_all)."""
        where, params = self._filters(None, name, None, before_ms)
        where.append("state IN ('pending', 'inProgress')")
        rows = self._rows(
            f"SELECT id FROM {self._table} WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY scheduled_time, seq",
            params,
        )
        return [r["id"] for r in rows]


_EVENT_TIME: dict[type, str] = {ScheduledFunction.Scheduled: "creation_time_ms"}
_HIDDEN = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})


def history_entries(events: Iterable[object]) -> list[dict[str, Any]]:
    """Return a job's events as dicts, oldest first: `type`, `time`, `version`, data (S29)."""
    entries = []
    for event in events:
        if not dataclasses.is_dataclass(event):
            continue
        data = {
            f.name: getattr(event, f.name)
            for f in dataclasses.fields(event)
            if f.name not in _HIDDEN
        }
        time_field = _EVENT_TIME.get(type(event), "at_ms")
        entries.append(
            {
                "type": type(event).__name__,
                "time": float(data.pop(time_field)),
                "version": getattr(event, "originator_version", None),
                **data,
            }
        )
    return entries
