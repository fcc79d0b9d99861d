"""How `schedlog run` ends: a persistent store outage (status 3), a stop signal (status 0)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.process.crashapp import SLOW, build_app

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


def test_a_persistent_store_outage_exits_with_status_3(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SCHEDLOG_")},
        "CRASH_EFFECTS": str(tmp_path / "effects.log"),
        "CRASH_LEASE_MS": "600",  # heartbeats every 200 ms
        "PYTHONPATH": str(ROOT),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "schedlog", "--store", f"sqlite://{db}?lock_timeout=1",
         "run", "tests.process.crashapp:app", "--max-outage", "2", "--log-level", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert worker.stdout is not None
    ready = worker.stdout.readline()
    assert "schedlog worker " in ready, ready
    locker = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # every write of the worker now finds it locked
        status = worker.wait(timeout=60)
        stderr = worker.stderr.read() if worker.stderr else ""
    finally:
        locker.rollback()
        locker.close()
        if worker.poll() is None:
            worker.kill()
        for stream in (worker.stdout, worker.stderr):
            if stream is not None:
                stream.close()
    assert status == 3, stderr
    assert "the store has been unreachable for" in stderr
    assert "database is locked" in stderr  # the cause is in the log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_lets_the_running_function_finish_then_exits_0(
    tmp_path: Path, signum: signal.Signals
) -> None:
    db = tmp_path / "jobs.db"
    store = f"sqlite://{db}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SCHEDLOG_")},
        "CRASH_EFFECTS": str(tmp_path / "effects.log"),
        "PYTHONPATH": str(ROOT),
    }
    scheduler = build_app(store, str(tmp_path / "effects.log"), 30_000)
    try:
        slow_job = scheduler.scheduler.run_after(0, SLOW, 1_500)
        later_job = scheduler.scheduler.run_after(60_000, SLOW, 1)
    finally:
        scheduler.close()
    worker = subprocess.Popen(
        [sys.executable, "-m", "schedlog", "--store", store, "run", "tests.process.crashapp:app",
         "--grace", "20", "--log-level", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert worker.stdout is not None
    lines = [worker.stdout.readline().strip() for _ in range(2)]
    assert any(line == f"started {slow_job}" for line in lines), lines
    worker.send_signal(signum)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert f"completed {slow_job}" in out  # it finished within the grace period
    observer = build_app(store, str(tmp_path / "effects.log"), 30_000)
    try:
        assert observer.scheduled_functions.get(slow_job)["state"] == {"kind": "success"}  # type: ignore[index]
        assert observer.scheduled_functions.get(later_job)["state"] == {"kind": "pending"}  # type: ignore[index]
    finally:
        observer.close()


def test_a_busy_store_is_a_store_error_for_every_caller(tmp_path: Path) -> None:
    """Opening an App, a replay and retention got the driver's bare sqlite3.OperationalError
    ("database is locked"): no SchedlogError, and the runtime took it for a permanent error
    (`schedlog run` died with a traceback). Each waits the lock timeout (1 s), then says so."""
    from schedlog import App, StoreError
    from schedlog.actors.retry import Fault, classify

    db = tmp_path / "jobs.db"
    url = f"sqlite://{db}?lock_timeout=1"
    app = App(store=url)
    locker = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        for call in (lambda: App(store=url), app.replay, lambda: app.apply_retention(0)):
            with pytest.raises(StoreError, match="database is locked") as busy:
                call()
            assert classify(busy.value) is Fault.TRANSIENT  # backed off, not failed
    finally:
        locker.rollback()
        locker.close()
        app.close()
