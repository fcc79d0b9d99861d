"""schedlog: the system under test, on SQLite (WAL, every commit fsynced).

The worker process is `schedlog --store URL run bench.peers.sys_schedlog:app` (`app` is built on
first access from $SCHEDLOG_STORE, with 4 slots and, if set, $BENCH_LEASE_MS); its ready line is
`schedlog worker <node> running on ...`. The bench process opens the same store with
`build_app` to schedule the same functions by name.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from bench._common import WorkerSpec, record
from bench.peers.base import Client, System
from schedlog import ActionCtx, App, MutationCtx

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

ACTION = "bench:touch"
MUTATION = "bench:touch_m"
BATCH = "bench:batch"
SLOTS = 4
LEASE_ENV = "BENCH_LEASE_MS"


def build_app(store: str | None = None, lease_ms: int | None = None) -> App:
    """Return an App with the bench's functions registered (not started)."""
    options: dict[str, Any] = {} if lease_ms is None else {"lease_ms": lease_ms}
    app = App(store=store, max_concurrency=SLOTS, **options)

    @app.action(name=ACTION)
    def touch(ctx: ActionCtx, sink: str, index: int) -> None:
        del ctx
        record(sink, index)

    @app.mutation(name=MUTATION)
    def touch_m(ctx: MutationCtx, sink: str, index: int) -> None:
        del ctx
        record(sink, index)

    @app.mutation(name=BATCH)
    def batch(ctx: MutationCtx, sink: str, first: int, count: int, due_ms: int) -> None:
        """Schedule `count` touches due at `due_ms`, committed with this one mutation."""
        for index in range(first, first + count):
            ctx.scheduler.run_at(due_ms, ACTION, sink, index)

    return app


def __getattr__(name: str) -> App:
    """Build `app` on first access, from the worker's environment (keeps imports harmless)."""
    if name != "app":
        raise AttributeError(name)
    lease = os.environ.get(LEASE_ENV)
    app = build_app(lease_ms=None if lease is None else int(lease))
    globals()["app"] = app
    return app


class SchedlogClient(Client):
    def __init__(self, store: Path, function: str) -> None:
        self.app = build_app(f"sqlite://{store}")
        self.function = function

    def schedule(self, sink: str, index: int, due_ms: int | None) -> str:
        if due_ms is None:
            return self.app.scheduler.run_after(0, self.function, sink, index)
        return self.app.scheduler.run_at(due_ms, self.function, sink, index)

    def schedule_batch(self, sink: str, first: int, count: int, due_ms: int) -> None:
        """The batch form: `count` jobs scheduled by one mutation, in one commit."""
        self.app.run_mutation(BATCH, sink, first, count, due_ms)

    def cancel(self, handle: Any) -> None:
        self.app.scheduler.cancel(handle)

    def start_worker(self) -> None:
        self.app.start()

    def stop_worker(self) -> None:
        self.app.stop()

    def unfinished(self) -> int:
        counts = self.app.stats().counts
        return counts["pending"] + counts["inProgress"]

    def states(self, handles: Sequence[Any]) -> list[str]:
        docs = (self.app.scheduled_functions.get(h) for h in handles)
        return ["gone" if d is None else d["state"]["kind"] for d in docs]

    def close(self) -> None:
        self.app.close()


class Schedlog(System):
    family = "schedlog"
    settings = (
        "SQLite WAL, synchronous=FULL (every commit fsynced); max_concurrency=4; "
        "worker: `schedlog run` (--log-level WARNING)"
    )

    def __init__(self, *, mutations: bool = False) -> None:
        self.function = MUTATION if mutations else ACTION
        self.label = "schedlog (mutations)" if mutations else "schedlog"

    def store_file(self, directory: Path) -> Path:
        return directory / "schedlog.db"

    def client(self, store: Path) -> SchedlogClient:
        return SchedlogClient(store, self.function)

    def worker(self, store: Path, env: dict[str, str] | None = None) -> WorkerSpec:
        argv = [sys.executable, "-m", "schedlog", "--store", f"sqlite://{store}", "run"]
        argv += ["bench.peers.sys_schedlog:app", "--log-level", "WARNING", "--grace", "30"]
        return WorkerSpec(argv, env or {}, ready="schedlog worker ")
