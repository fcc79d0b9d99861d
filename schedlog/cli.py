"""The `schedlog` command line: demo, run, ls, show, history, cancel, cancel-all, replay, stats.

The only module that prints. `--json` (before or after the command) prints one JSON document
(orjson); otherwise tables (rich, built by `cli_render`). Any `SchedlogError`, and a bad TIME,
becomes a one-line message on stderr and exit status 1.
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from schedlog import cli_args
from schedlog import cli_render as render
from schedlog.app import App
from schedlog.audit import DEFAULT_RETENTION_MS
from schedlog.demo import DEFAULT_DEMO_PATH, run_demo
from schedlog.errors import ConfigurationError, JobNotFoundError, SchedlogError
from schedlog.events import JobState
from schedlog.events.function import canonical_id
from schedlog.events.values import TERMINAL_STATES
from schedlog.store import postgres_store_exists, sqlite_store_exists
from schedlog.urls import parse_store_url
from schedlog.worker import run_worker

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["main"]

log = logging.getLogger(__name__)

STATES = [s.value for s in JobState]
STATE_OPTION = click.option(
    "--state", type=click.Choice(STATES), default=None, help="Only jobs in this state."
)
NAME_OPTION = click.option("--name", default=None, help="Only jobs of this function name.")


@dataclass(frozen=True, slots=True)
class Options:
    """The global options, handed to every command."""

    store: str | None
    as_json: bool


class _Group(click.Group):
    """A click group that turns any SchedlogError into `Error: <message>` and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SchedlogError as e:
            raise click.ClickException(str(e)) from e


@click.group(cls=_Group, epilog=cli_args.TIME_HELP)
@click.option(
    "--store",
    metavar="URL",
    default=None,
    help="sqlite:///abs/path.db, sqlite://rel/path.db (options: ?lock_timeout=SECONDS, "
    "?synchronous=normal to skip the fsync of each commit), postgresql://user@host/db "
    "or memory:// (default: $SCHEDLOG_STORE, else sqlite://schedlog.db).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.version_option(package_name="schedlog")
@click.pass_context
def main(ctx: click.Context, store: str | None, as_json: bool) -> None:
    """Schedlog: durable scheduled functions, event-sourced."""
    ctx.obj = Options(store, as_json)


# Output helpers.


def _emit_json(value: object) -> None:
    try:
        text = orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()
    except orjson.JSONEncodeError:  # past orjson's 255 levels: arguments nested that deep
        text = json.dumps(value, indent=2, default=str, ensure_ascii=False)
    click.echo(text)


# Opening the store for the read and cancel commands.


@contextmanager
def _open_app(options: Options, retention_ms: int | None = DEFAULT_RETENTION_MS) -> Iterator[App]:
    """Yield an App on the chosen store, not started; the store must already exist."""
    config = parse_store_url(options.store)
    if config.sqlite_dbname and not config.is_memory:
        if not Path(config.sqlite_dbname).exists():
            raise ConfigurationError(f"store {config.url!r}: no such file {config.sqlite_dbname!r}")
        if not sqlite_store_exists(config):
            raise ConfigurationError(
                f"store {config.url!r}: {config.sqlite_dbname!r} holds no schedlog store "
                "(nothing created)"
            )
    if config.postgres is not None and not postgres_store_exists(config):
        schema = config.postgres["POSTGRES_SCHEMA"]
        raise ConfigurationError(
            f"store {config.safe_url!r}: no schedlog store in schema {schema!r} (nothing created)"
        )
    app = App(store=config.url, retention_ms=retention_ms)
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
@cli_args.JSON_FLAG
@click.pass_obj
def demo(options: Options, path: Path) -> None:
    """Run a short demo on a fresh SQLite file and print what happened."""
    if options.store is not None:
        raise click.UsageError("demo always writes a fresh SQLite file: use --path, not --store")
    result = run_demo(path)
    if options.as_json:
        history = {result.deposit_id: result.deposit_history}
        _emit_json(
            {"store": result.store_url, "scheduled_functions": result.documents}
            | {"history": history, "balance": result.balance}
        )
        return
    console = render.console()
    click.echo(f"store: {result.store_url}")
    console.print(render.documents_table("_scheduled_functions", result.documents))
    title = f"history of demo:deposit {result.deposit_id}"
    console.print(render.timeline_table(title, result.deposit_history))
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
    run_worker(options.store, target, grace=grace, max_outage=max_outage)


@main.command(name="ls", epilog=cli_args.TIME_HELP)
@STATE_OPTION
@NAME_OPTION
@click.option("--parent", "parent_id", metavar="ID", default=None, help="Only jobs ID scheduled.")
@click.option(
    "--after", "scheduled_after_ms", **cli_args.TIME_OPTION, help="Only jobs due at/after TIME."
)
@click.option(
    "--before", "scheduled_before_ms", **cli_args.TIME_OPTION, help="Only jobs due before TIME."
)
@click.option("--order", type=click.Choice(["asc", "desc"]), default="asc", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@cli_args.JSON_FLAG
@click.pass_obj
def list_jobs(options: Options, /, limit: int, **filters: Any) -> None:
    """List scheduled functions by scheduledTime (due time), then scheduling order."""
    with _open_app(options) as app:
        parent_id = filters["parent_id"]
        if parent_id is not None and app.store.load_job(parent_id) is None:
            raise JobNotFoundError(parent_id)
        documents, more = render.collect(app.scheduled_functions, limit, **filters)
    if options.as_json:
        _emit_json(documents)  # a list, as before; that it is cut short goes to stderr
        if more:
            click.echo(f"the first {len(documents)}; more match (raise --limit)", err=True)
    else:
        render.console().print(render.documents_table("_scheduled_functions", documents, more=more))


@main.command()
@click.argument("job_id", metavar="ID")
@cli_args.JSON_FLAG
@click.pass_obj
def show(options: Options, job_id: str) -> None:
    """Show one scheduled function's document."""
    with _open_app(options) as app:
        doc = _get_document(app, job_id)
    if options.as_json:
        _emit_json(doc)
    else:
        render.console().print(render.document_table(doc))


@main.command()
@click.argument("job_id", metavar="ID")
@cli_args.JSON_FLAG
@click.pass_obj
def history(options: Options, job_id: str) -> None:
    """Show a job's timeline (its events, oldest first), its parent and its children.

    It works after the job has left the view (retention): the log keeps everything.
    """
    job_id = canonical_id(job_id)
    with _open_app(options) as app:
        entries = app.history(job_id)
        children = app.children(job_id)
    parent = entries[0].get("parent_id") if entries else None
    if options.as_json:
        _emit_json({"id": job_id, "parent": parent, "children": children, "events": entries})
        return
    name = entries[0].get("name", "?") if entries else "?"
    render.console().print(render.timeline_table(f"history of {job_id} ({name})", entries))
    for line in render.relations(job_id, parent, children):
        click.echo(line)


@main.command()
@click.argument("job_id", metavar="ID")
@cli_args.JSON_FLAG
@click.pass_obj
def cancel(options: Options, job_id: str) -> None:
    """Cancel a pending or running scheduled function (a finished one is left alone)."""
    job_id = canonical_id(job_id)
    with _open_app(options) as app:
        before = app.scheduled_functions.get(job_id)
        app.scheduler.cancel(job_id)
        doc = app.scheduled_functions.get(job_id)
        job = app.store.load_job(job_id) if doc is None else None
    if doc is None and job is not None:  # finished, and gone from the view: a no-op (S23)
        if options.as_json:
            _emit_json({"_id": job.job_id, "state": {"kind": job.state.value}})
        else:
            click.echo(
                f"{job_id}: already {job.state.value}; nothing to cancel "
                "(it has left the view; see `history`)"
            )
        return
    if doc is None:
        raise JobNotFoundError(job_id)  # it was there for the cancel: gone since
    if options.as_json:
        _emit_json(doc)
    elif before is not None and before["state"]["kind"] in TERMINAL_STATES:
        click.echo(f"{job_id}: already {doc['state']['kind']}; nothing to cancel")
    else:
        click.echo(f"{job_id}: {doc['state']['kind']}")


@main.command(name="cancel-all", epilog=cli_args.TIME_HELP)
@NAME_OPTION
@click.option("--before", **cli_args.TIME_OPTION, help="Only jobs due before TIME.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@cli_args.JSON_FLAG
@click.pass_obj
def cancel_all(options: Options, name: str | None, before: int | None, yes: bool) -> None:
    """Cancel every pending and running job, or those matching --name and --before.

    It asks for confirmation on a terminal; elsewhere (scripts, pipes) it needs --yes.
    """
    what = render.cancel_all_subject(name, before)
    with _open_app(options) as app:
        matched = len(app.scheduled_functions.unfinished_ids(name, before))
        if matched and not yes:
            if sys.stdin is None or not sys.stdin.isatty():
                raise click.ClickException(
                    f"not canceling {render.jobs(matched)} ({what}) without confirmation: "
                    "stdin is not a terminal; pass --yes"
                )
            if not click.confirm(f"Cancel {render.jobs(matched)} ({what})?", err=True):
                raise click.ClickException("not confirmed; nothing canceled")
        canceled = app.scheduler.cancel_all(name=name, before_ms=before) if matched else 0
    if options.as_json:
        _emit_json({"canceled": canceled, "matched": matched, "name": name, "before": before})
    else:
        click.echo(f"canceled {render.jobs(canceled)} ({what})")


@main.command(epilog=cli_args.TIME_HELP)
@click.option("--as-of", **cli_args.TIME_OPTION, help="Build the view as it stood at TIME instead.")
@STATE_OPTION
@NAME_OPTION
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most [100].")
@click.option(
    "--retention",
    "retention_ms",
    type=cli_args.RETENTION,
    default="7",
    show_default=True,
    help="Days finished jobs stay in the view (the App's retention_ms); 'forever' keeps them.",
)
@cli_args.JSON_FLAG
@click.pass_obj
def replay(
    options: Options,
    /,
    as_of: int | None,
    limit: int | None,
    retention_ms: int | None,
    **filters: Any,
) -> None:
    """Rebuild the view from the log, or with --as-of show it as it stood at an instant.

    The rebuild replaces the live view by exactly the one the log gives (a running worker
    carries on). --as-of leaves the live view alone and prints the past one; --state, --name
    and --limit choose what it prints.
    """
    if as_of is None and (limit is not None or any(v is not None for v in filters.values())):
        raise click.UsageError("--state, --name and --limit need --as-of")
    progress = render.ReplayProgress(render.console(stderr=True))
    if as_of is None:
        with _open_app(options, retention_ms) as app, progress:
            applied = app.replay(progress=progress)
            counts = app.scheduled_functions.stats(app.clock.now_ms()).counts
        if options.as_json:
            _emit_json({"events_applied": applied, "counts": counts})
        else:
            click.echo(f"rebuilt the view from the log: {applied} job events applied")
            click.echo(f"jobs: {render.counts_text(counts)}")
        return
    with (
        _open_app(options, retention_ms) as app,
        progress,
        app.replay(as_of=as_of, progress=progress) as view,
    ):
        documents, more = render.collect(view, limit or 100, **filters)
        past = view.stats(as_of)
    if options.as_json:
        report = {"as_of": as_of, "events_applied": view.events_applied, **asdict(past)}
        _emit_json({**report, "scheduled_functions": documents, "truncated": more})
    else:
        title = f"_scheduled_functions as of {render.iso_ms(as_of)}"
        render.console().print(render.documents_table(title, documents, more=more))
        for line in render.as_of_lines(as_of, view.events_applied, past):
            click.echo(line)


@main.command()
@cli_args.JSON_FLAG
@click.pass_obj
def stats(options: Options) -> None:
    """Show jobs by state, how many run, the scheduler's lag and a health word.

    The lag is how long the oldest due job has waited to start: healthy up to 20 s behind,
    warning up to 300 s, error beyond (Convex's thresholds).
    """
    with _open_app(options) as app:
        now = app.clock.now_ms()
        result = app.scheduled_functions.stats(now)
    if options.as_json:
        _emit_json({"now": now, **asdict(result)})
    else:
        render.console().print(render.stats_table(result, now))
