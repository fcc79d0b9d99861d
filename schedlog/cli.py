"""The `schedlog` command line: demo, run, ls, show, history, cancel; the only module that prints.

`--json` prints one JSON document (orjson) per command; otherwise tables (rich). Any
`SchedlogError` becomes a one-line message on stderr and exit status 1.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from schedlog.app import App
from schedlog.demo import DEFAULT_DEMO_PATH, run_demo
from schedlog.errors import ConfigurationError, JobNotFoundError, SchedlogError
from schedlog.events import JobState
from schedlog.events.values import TERMINAL_STATES
from schedlog.store import parse_store_url

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType

__all__ = ["main"]

log = logging.getLogger(__name__)

HEALTH_CHECK_S = 1.0
"""How often `schedlog run` checks that its runtime is still alive while it waits for a signal."""
PAGE_MAX = 1000
PIPE_WIDTH = 200
STATES = [s.value for s in JobState]


@dataclass(frozen=True, slots=True)
class Options:
    """The global options, handed to every command."""

    store: str | None
    as_json: bool


STORE_OUTAGE_EXIT = 3


class StoreOutageExit(click.ClickException):
    """The store stayed unreachable too long: `schedlog run` exits with status 3."""

    exit_code = STORE_OUTAGE_EXIT

    def __init__(self, outage_ms: int) -> None:
        super().__init__(f"the store has been unreachable for {outage_ms / 1000:.0f} s")


class _Group(click.Group):
    """A click group that turns any SchedlogError into `Error: <message>` and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SchedlogError as e:
            raise click.ClickException(str(e)) from e


@click.group(cls=_Group)
@click.option(
    "--store",
    metavar="URL",
    default=None,
    help="sqlite:///abs/path.db, sqlite://rel/path.db or memory:// "
    "(default: $SCHEDLOG_STORE, else sqlite://schedlog.db).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.version_option(package_name="schedlog")
@click.pass_context
def main(ctx: click.Context, store: str | None, as_json: bool) -> None:
    """Schedlog: durable scheduled functions, event-sourced."""
    ctx.obj = Options(store, as_json)


# Output helpers.


def _console() -> Console:
    # Piped output gets wide tables rather than rich's default of 80 columns.
    wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=PIPE_WIDTH if wide else None, highlight=False)


def _emit_json(value: object) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode())


def iso_ms(ms: float | None) -> str:
    """Format epoch milliseconds as ISO 8601 UTC (`2027-01-01T00:00:00.000Z`); '' for None."""
    if ms is None:
        return ""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _add_row(table: Table, *cells: str) -> None:
    table.add_row(*(Text(cell) for cell in cells))  # Text: no rich markup in user data


def _first_line(text: str | None) -> str:
    return text.splitlines()[0] if text else ""


def _documents_table(title: str, documents: list[dict[str, Any]]) -> Table:
    table = Table(title=Text(title))
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
            _first_line(state.get("error")),
        )
    return table


def _details(entry: dict[str, Any]) -> str:
    parts = []
    for key, value in entry.items():
        if key in {"type", "time", "version"} or value is None or value in ({}, []):
            continue
        if key.endswith("_ms") and isinstance(value, (int, float)):
            text = iso_ms(value)
        elif isinstance(value, str):
            text = _first_line(value)
        else:
            text = orjson.dumps(value, default=str).decode()
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _history_table(title: str, entries: list[dict[str, Any]]) -> Table:
    table = Table(title=Text(title))
    for column in ("type", "time", "details"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        _add_row(table, entry["type"], iso_ms(entry["time"]), _details(entry))
    return table


def _document_table(doc: dict[str, Any]) -> Table:
    table = Table(title=Text(f"scheduled function {doc['_id']}"), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    state = doc["state"]
    rows = [
        ("_id", doc["_id"]),
        ("name", doc["name"]),
        ("state", state["kind"]),
        ("args", orjson.dumps(doc.get("args", []), default=str).decode()),
        ("kwargs", orjson.dumps(doc["kwargs"], default=str).decode() if "kwargs" in doc else ""),
        ("_creationTime", iso_ms(doc["_creationTime"])),
        ("scheduledTime", iso_ms(doc["scheduledTime"])),
        ("completedTime", iso_ms(doc.get("completedTime"))),
        ("error", state.get("error") or ""),
    ]
    for field, value in rows:
        if value:
            _add_row(table, field, value)
    return table


# Opening the store for the read and cancel commands.


@contextmanager
def _open_app(options: Options) -> Iterator[App]:
    """Yield an App on the chosen store, not started; the store must already exist."""
    config = parse_store_url(options.store)
    if not config.is_memory and not Path(config.sqlite_dbname).exists():
        raise ConfigurationError(f"store {config.url!r}: no such file {config.sqlite_dbname!r}")
    app = App(store=config.url)
    try:
        yield app
    finally:
        app.close()


def _get_document(app: App, job_id: str) -> dict[str, Any]:
    doc = app.scheduled_functions.get(job_id)
    if doc is None:
        if app.store.load_job(job_id) is None:
            raise JobNotFoundError(job_id)
        raise SchedlogError(f"job {job_id!r} has left the view (retention); see `history`")
    return doc


# Commands.


@main.command()
@click.option(
    "--path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_DEMO_PATH,
    show_default=True,
    help="The SQLite file to (re)create for the demo.",
)
@click.pass_obj
def demo(options: Options, path: Path) -> None:
    """Run a short demo on a fresh SQLite file and print what happened."""
    if options.store is not None:
        raise click.UsageError("demo always writes a fresh SQLite file: use --path, not --store")
    result = run_demo(path)
    if options.as_json:
        _emit_json(
            {
                "store": result.store_url,
                "scheduled_functions": result.documents,
                "history": {result.deposit_id: result.deposit_history},
                "balance": result.balance,
            }
        )
        return
    console = _console()
    click.echo(f"store: {result.store_url}")
    console.print(_documents_table("_scheduled_functions", result.documents))
    console.print(
        _history_table(f"history of demo:deposit {result.deposit_id}", result.deposit_history)
    )
    click.echo(f"account balance after demo:deposit: {result.balance} cents")


@main.command()
@click.argument("target", metavar="MODULE:APP")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds running functions get to finish after SIGINT/SIGTERM.",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option(
    "--max-outage",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Exit with status 3 once the store has been unreachable this many seconds.",
)
@click.pass_obj
def run(options: Options, target: str, grace: float, log_level: str, max_outage: float) -> None:
    """Run the App `MODULE:APP` as a worker until SIGINT or SIGTERM.

    Exit status: 0 after a graceful stop; 1 on a bad target or a dead runtime; 3 when the store
    stayed unreachable for longer than --max-outage (jobs are kept; restart when it is back).
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if options.store is not None:
        os.environ["SCHEDLOG_STORE"] = options.store  # read when the user's module calls App()
    app = _load_app(target)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("received %s; stopping", signal.Signals(signum).name)
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        app.start()
        click.echo(f"schedlog worker {app.node_id} running on {app.store_config.url}")
        sys.stdout.flush()
        while not stopping.wait(HEALTH_CHECK_S):
            app.check_accepting()  # a dead runtime raises RuntimeClosedError: exit 1
            outage_ms = app.store_outage_ms()
            if outage_ms > max_outage * 1000:
                log.error("the store has been unreachable for %.0f s; giving up", outage_ms / 1000)
                raise StoreOutageExit(outage_ms)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # a second Ctrl-C kills as usual
        app.stop(timeout_s=grace)
        app.close()
    click.echo(f"schedlog worker {app.node_id} stopped")


def _load_app(target: str) -> App:
    """Import `MODULE:APP` (the current directory first on sys.path) and return the App."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"expected MODULE:APP (e.g. myproject.jobs:app), got {target!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigurationError(f"cannot import {module_name!r}: {e}") from e
    value: object = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(value, App):
        raise ConfigurationError(f"{target!r} is a {type(value).__name__}, not a schedlog App")
    return value


@main.command(name="ls")
@click.option("--state", type=click.Choice(STATES), default=None, help="Only jobs in this state.")
@click.option("--name", default=None, help="Only jobs of this function name.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.pass_obj
def list_jobs(options: Options, state: str | None, name: str | None, limit: int) -> None:
    """List scheduled functions by scheduledTime."""
    documents: list[dict[str, Any]] = []
    with _open_app(options) as app:
        cursor: str | None = None
        while len(documents) < limit:
            page = app.scheduled_functions.query(
                state=state, name=name, limit=min(limit - len(documents), PAGE_MAX), cursor=cursor
            )
            documents.extend(page.items)
            cursor = page.cursor
            if cursor is None:
                break
    if options.as_json:
        _emit_json(documents)
    else:
        _console().print(_documents_table("_scheduled_functions", documents))


@main.command()
@click.argument("job_id", metavar="ID")
@click.pass_obj
def show(options: Options, job_id: str) -> None:
    """Show one scheduled function's document."""
    with _open_app(options) as app:
        doc = _get_document(app, job_id)
    if options.as_json:
        _emit_json(doc)
    else:
        _console().print(_document_table(doc))


@main.command()
@click.argument("job_id", metavar="ID")
@click.pass_obj
def history(options: Options, job_id: str) -> None:
    """Show a scheduled function's events, oldest first."""
    with _open_app(options) as app:
        entries = app.history(job_id)
    if options.as_json:
        _emit_json(entries)
    else:
        _console().print(_history_table(f"history of {job_id}", entries))


@main.command()
@click.argument("job_id", metavar="ID")
@click.pass_obj
def cancel(options: Options, job_id: str) -> None:
    """Cancel a pending or running scheduled function (a finished one is left alone)."""
    with _open_app(options) as app:
        before = app.scheduled_functions.get(job_id)
        app.scheduler.cancel(job_id)
        doc = _get_document(app, job_id)
    if options.as_json:
        _emit_json(doc)
    elif before is not None and before["state"]["kind"] in TERMINAL_STATES:
        click.echo(f"{job_id}: already {doc['state']['kind']}; nothing to cancel")
    else:
        click.echo(f"{job_id}: {doc['state']['kind']}")
