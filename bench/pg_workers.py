"""The worker side of bench/pg_bench.py: the schedlog App its nodes run, and Procrastinate's app.

Every job body does the same thing: append one line `index start_time pid` to the sink file
named by $BENCH_SINK, with one `os.write` on an O_APPEND descriptor (lines of concurrent writers,
threads or processes, never interleave).

- schedlog node: `schedlog --store URL run bench.pg_workers:app` from the repository root
  (`app` is built on first access, from $SCHEDLOG_STORE, with $BENCH_SLOTS slots).
- Procrastinate worker: `python -m bench.pg_workers procrastinate CONNINFO --concurrency 4
  --poll 5`; prints `procrastinate worker ready` once its loop has started; SIGTERM stops it
  gracefully.

The bench process imports `build_app` and `build_procrastinate` to schedule the same functions
by name; it never runs a job.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import procrastinate

from bench import _common
from schedlog import ActionCtx, App, MutationCtx

if TYPE_CHECKING:
    from collections.abc import Callable

SINK_ENV = "BENCH_SINK"
SLOTS_ENV = "BENCH_SLOTS"
TOUCH = "bench:touch"
"""A trivial mutation: records its start, writes nothing to the store."""
TOUCH_ACTION = "bench:touch_action"
"""The same body as an action (claimed by its `Started` before it runs)."""
FILL = "bench:fill"
"""A mutation that schedules `count` touches due now in its one commit (the batch form)."""
PROC_TASK = "bench_touch"
READY = "procrastinate worker ready"


def record(index: int) -> None:
    """The job body: the suite's (`bench._common.record`), into the sink named by $BENCH_SINK."""
    _common.record(os.environ[SINK_ENV], index)


def build_app(store: str | None = None, max_concurrency: int | None = None) -> App:
    """Return a schedlog App with the bench's functions registered (not started)."""
    slots = max_concurrency or int(os.environ.get(SLOTS_ENV, "4"))
    app = App(store=store, max_concurrency=slots)

    @app.mutation(name=TOUCH)
    def touch(ctx: MutationCtx, index: int) -> None:
        del ctx
        record(index)

    @app.action(name=TOUCH_ACTION)
    def touch_action(ctx: ActionCtx, index: int) -> None:
        del ctx
        record(index)

    @app.mutation(name=FILL)
    def fill(ctx: MutationCtx, first: int, count: int) -> None:
        for index in range(first, first + count):
            ctx.scheduler.run_after(0, TOUCH, index)

    return app


_app: App | None = None


def __getattr__(name: str) -> Any:
    """Build `app` only when a node asks for it (importing this module writes nothing)."""
    global _app  # noqa: PLW0603
    if name != "app":
        raise AttributeError(name)
    if _app is None:
        _app = build_app()
    return _app


def build_procrastinate(conninfo: str, *, worker: bool) -> procrastinate.App:
    """Return a Procrastinate app with the bench task: async connector in a worker, else sync."""
    connector: Any = (
        procrastinate.PsycopgConnector(conninfo=conninfo)
        if worker
        else procrastinate.SyncPsycopgConnector(conninfo=conninfo)
    )
    papp = procrastinate.App(connector=connector)

    @papp.task(name=PROC_TASK)
    async def touch(index: int) -> None:  # async: no thread hop, Procrastinate's fast path
        record(index)

    del touch
    return papp


class _ReadyHandler(logging.Handler):
    """Print the ready line when the worker logs its start, then quiet the worker's logger."""

    def __init__(self, logger: logging.Logger, on_ready: Callable[[], None]) -> None:
        super().__init__(logging.INFO)
        self._logger = logger
        self._on_ready = on_ready

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "action", None) == "start_worker":
            self._on_ready()
            self._logger.setLevel(logging.WARNING)  # no per-job INFO records from here on


def run_procrastinate_worker(conninfo: str, concurrency: int, poll_s: float) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logger = logging.getLogger("procrastinate.worker")
    logger.setLevel(logging.INFO)

    def ready() -> None:
        print(READY, flush=True)

    logger.addHandler(_ReadyHandler(logger, ready))
    papp = build_procrastinate(conninfo, worker=True)
    papp.run_worker(concurrency=concurrency, fetch_job_polling_interval=poll_s, wait=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("procrastinate", help="run one Procrastinate worker")
    worker.add_argument("conninfo")
    worker.add_argument("--concurrency", type=int, default=4)
    worker.add_argument("--poll", type=float, default=5.0, help="fetch_job_polling_interval (s)")
    args = parser.parse_args(argv)
    run_procrastinate_worker(args.conninfo, args.concurrency, args.poll)


if __name__ == "__main__":
    main(sys.argv[1:])
