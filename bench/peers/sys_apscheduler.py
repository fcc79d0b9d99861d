"""APScheduler 3.11: BackgroundScheduler, SQLAlchemyJobStore on SQLite, ThreadPoolExecutor(4).

Store: an SQLAlchemy engine on the file with journal_mode=WAL and synchronous=FULL set on every
connection (the same durability as the others; the job store's own default would be a rollback
journal). A job is `add_job(record, "date", run_date=..., args=[sink, index],
misfire_grace_time=None)`, one INSERT; a cancel is `remove_job(id)`, one DELETE. The scheduler
removes a one-shot job from the store when it hands it to the thread pool, before it runs.

Clients: `add_job` on a scheduler that was never started only queues the job in memory, so the
bench process starts its scheduler *paused* (`start(paused=True)`): `add_job` then writes to the
store at once and nothing runs here; `resume()` makes it the in-process worker.

The worker process (`python -m bench.peers.sys_apscheduler FILE`) is a second scheduler on the
same store. APScheduler 3 does not support sharing a job store between schedulers: a scheduler
reads the store only when it wakes, and with no job known it sleeps until one is added *in its
own process*. So the worker's main thread calls `scheduler.wakeup()` every 25 ms (what
schedlog's SQLite log watcher does); without it, jobs added by another process never run. It
prints `apscheduler worker ready` once started; SIGTERM shuts it down, waiting for running jobs.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import create_engine, event, func, select

from bench._common import WorkerSpec, record
from bench.peers.base import Client, System

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

READY = "apscheduler worker ready"
WORKERS = 4
POKE_S = 0.025


def build_scheduler(filename: Path) -> tuple[BackgroundScheduler, SQLAlchemyJobStore]:
    """Return a scheduler (not started) on the store `filename`, and its job store."""
    engine = create_engine(f"sqlite:///{filename}")

    @event.listens_for(engine, "connect")
    def pragmas(dbapi_connection: Any, connection_record: Any) -> None:
        del connection_record
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=FULL")

    jobstore = SQLAlchemyJobStore(engine=engine)
    scheduler = BackgroundScheduler(
        jobstores={"default": jobstore},
        executors={"default": ThreadPoolExecutor(WORKERS)},
        timezone=UTC,
    )
    return scheduler, jobstore


class APSchedulerClient(Client):
    def __init__(self, store: Path) -> None:
        self.scheduler, self.jobstore = build_scheduler(store)
        self.scheduler.start(paused=True)

    def schedule(self, sink: str, index: int, due_ms: int | None) -> str:
        run_date = (
            datetime.now(UTC) if due_ms is None else datetime.fromtimestamp(due_ms / 1000, tz=UTC)
        )
        job = self.scheduler.add_job(
            record, "date", run_date=run_date, args=[sink, index], misfire_grace_time=None
        )
        return str(job.id)

    def cancel(self, handle: Any) -> None:
        with contextlib.suppress(JobLookupError):  # already ran: nothing to cancel
            self.scheduler.remove_job(handle)

    def start_worker(self) -> None:
        self.scheduler.resume()

    def stop_worker(self) -> None:
        self.scheduler.pause()

    def unfinished(self) -> int:
        table = self.jobstore.jobs_t
        with self.jobstore.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def states(self, handles: Sequence[Any]) -> list[str]:
        stored = {job.id for job in self.scheduler.get_jobs()}
        return ["in store" if h in stored else "gone" for h in handles]

    def close(self) -> None:
        # Detach the store first: shutdown() wakes the scheduler's thread, which makes one last
        # pass over due jobs even when paused, submits them to the executor it has just shut
        # down, and dies on the JobLookupError that follows (APScheduler 3.11).
        self.scheduler.remove_jobstore("default", shutdown=False)
        self.scheduler.shutdown(wait=True)
        self.jobstore.engine.dispose()


class APScheduler(System):
    family = label = "apscheduler"
    settings = (
        "SQLAlchemyJobStore on SQLite, WAL, synchronous=FULL; ThreadPoolExecutor(4); "
        "misfire_grace_time=None; worker process: a 2nd scheduler on the store, woken every 25 ms"
    )

    def store_file(self, directory: Path) -> Path:
        return directory / "apscheduler.db"

    def client(self, store: Path) -> APSchedulerClient:
        return APSchedulerClient(store)

    def worker(self, store: Path, env: dict[str, str] | None = None) -> WorkerSpec:
        argv = [sys.executable, "-m", "bench.peers.sys_apscheduler", str(store)]
        return WorkerSpec(argv, env or {}, ready=READY)


def main(filename: str) -> None:
    """Run a scheduler on `filename`, woken every POKE_S, until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.WARNING)
    scheduler, _ = build_scheduler(Path(filename))
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    scheduler.start()
    print(READY, flush=True)
    while not stopping.wait(POKE_S):
        scheduler.wakeup()
    scheduler.shutdown(wait=True)


if __name__ == "__main__":
    main(sys.argv[1])
