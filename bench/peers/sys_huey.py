"""Huey 3.5 with SqliteHuey: a task queue whose consumer also runs scheduled (eta) tasks.

Store: `SqliteHuey(filename=..., fsync=True)`: journal_mode='wal' (its default) and
synchronous=FULL (`fsync=True`; SQLite's default is FULL too). Consumer defaults otherwise:
4 worker threads, `scheduler_interval=1` s (a scheduled task is moved to the queue by a loop
that runs once a second), idle workers poll the queue with a backoff from 0.1 s (x1.15 per
empty poll) up to `max_delay=10` s. A scheduled task (`task.schedule(args, eta=...)`) is one
INSERT into the queue; the worker that dequeues it before its eta moves it to the schedule. A
cancel is `result.revoke()` (one write); a revoked task is dropped when it is dequeued.

The worker process is `python -m bench.peers.sys_huey FILE`: `huey.create_consumer(workers=4,
worker_type="thread").run()`, which prints `huey consumer ready` once started; SIGINT stops it
gracefully (huey's SIGTERM stops at once).
"""

from __future__ import annotations

import logging
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huey import SqliteHuey

from bench._common import WorkerSpec, record
from bench.peers.base import Client, System

if TYPE_CHECKING:
    from collections.abc import Sequence

    from huey.api import Result, TaskWrapper
    from huey.consumer import Consumer

READY = "huey consumer ready"
TASK = "bench.touch"
WORKERS = 4


def build_huey(filename: Path) -> tuple[SqliteHuey, TaskWrapper]:
    """Return the Huey instance on `filename` and its one task, the job body."""
    huey = SqliteHuey(name="bench", filename=str(filename), fsync=True)
    return huey, huey.task(name=TASK)(record)


def make_consumer(huey: SqliteHuey) -> Consumer:
    return huey.create_consumer(workers=WORKERS, worker_type="thread")


class HueyClient(Client):
    def __init__(self, store: Path) -> None:
        self.huey, self.task = build_huey(store)
        self.consumer: Consumer | None = None

    def schedule(self, sink: str, index: int, due_ms: int | None) -> Result:
        if due_ms is None:
            return self.task(sink, index)
        eta = datetime.fromtimestamp(due_ms / 1000, tz=UTC)
        return self.task.schedule(args=(sink, index), eta=eta)

    def cancel(self, handle: Any) -> None:
        handle.revoke()

    def start_worker(self) -> None:
        """Start a consumer's threads here (it sets signal handlers: ours are put back)."""
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        self.consumer = make_consumer(self.huey)
        self.consumer.start()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)

    def stop_worker(self) -> None:
        if self.consumer is not None:
            self.consumer.stop(graceful=True)
            self.consumer = None

    def unfinished(self) -> int:
        return self.huey.pending_count() + self.huey.scheduled_count()

    def states(self, handles: Sequence[Any]) -> list[str]:
        queued = {t.id for t in self.huey.pending()}
        scheduled = {t.id for t in self.huey.scheduled()}
        return [
            "queued" if h.id in queued else "scheduled" if h.id in scheduled else "gone"
            for h in handles
        ]

    def close(self) -> None:
        self.stop_worker()
        self.huey.storage.close()


class Huey(System):
    family = label = "huey"
    settings = (
        "SqliteHuey: WAL, synchronous=FULL (fsync=True); consumer: 4 threads, "
        "scheduler_interval=1 s, queue polling backoff 0.1 s x1.15 up to 10 s (defaults)"
    )

    def store_file(self, directory: Path) -> Path:
        return directory / "huey.db"

    def client(self, store: Path) -> HueyClient:
        return HueyClient(store)

    def worker(self, store: Path, env: dict[str, str] | None = None) -> WorkerSpec:
        argv = [sys.executable, "-m", "bench.peers.sys_huey", str(store)]
        return WorkerSpec(argv, env or {}, ready=READY, stop_signal=signal.SIGINT)


def main(filename: str) -> None:
    """Run a consumer on `filename` until SIGINT (graceful) or SIGTERM."""
    logging.basicConfig(level=logging.WARNING)
    huey, _ = build_huey(Path(filename))
    consumer = make_consumer(huey)
    start = consumer.start

    def start_and_say_so() -> None:
        start()
        print(READY, flush=True)

    consumer.start = start_and_say_so  # type: ignore[method-assign]
    consumer.run()


if __name__ == "__main__":
    main(sys.argv[1])
