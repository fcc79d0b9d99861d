"""Exactly once under SIGKILL: worker processes killed at seeded random moments (S14-S19).

A worker runs a workload of mutations (changing user aggregates, scheduling children) and
actions (writing a side effect outside the store); the test reads the worker's output lines and
SIGKILLs it after a seeded random number of them, restarts it, and repeats. At the end every job
must be terminal with the guarantees of semantics.md. CRASH_KILLS sets the number of
kills (CI: 20); CRASH_SEED the seed.
"""

from __future__ import annotations

import collections
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka
import pytest

from schedlog import App
from schedlog.actors.recovery import CUT_OFF_ERROR
from tests.process.crashapp import DELIBERATE, EFFECT, TRANSFER, Account, build_app

pytestmark = [pytest.mark.process, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("CRASH_KILLS", "20"))
SEED = int(os.environ.get("CRASH_SEED", "20261127"))
LEASE_MS = 1_000
MUTATIONS = 400
ACTIONS = 150
ACCOUNTS = 8


@dataclass
class Worker:
    """A `schedlog run` subprocess and the lines it prints, read by a thread into a queue."""

    env: dict[str, str]
    proc: subprocess.Popen[str] | None = None
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    reader: threading.Thread = field(default_factory=threading.Thread)
    stderr: Any = None

    def start(self) -> None:
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "schedlog",
                "run",
                "tests.process.crashapp:app",
                "--log-level",
                "WARNING",
                "--grace",
                "10",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        stdout = self.proc.stdout
        assert stdout is not None
        lines = self.lines

        def pump() -> None:
            for line in stdout:
                lines.put(line.strip())
            lines.put(None)

        self.reader = threading.Thread(target=pump, daemon=True)
        self.reader.start()
        while True:  # jobs may start before the ready line is printed
            line = self.next_line(timeout=60)
            if line is None:
                self.proc.send_signal(signal.SIGABRT)  # faulthandler dumps every thread
                self.proc.wait(timeout=30)
            assert line is not None, "the worker printed no ready line (threads in its log)"
            if "schedlog worker " in line:
                return

    def next_line(self, timeout: float) -> str | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL
        self.close()

    def close(self) -> None:
        assert self.proc is not None
        self.reader.join(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout=60)
        self.close()
        return status


def schedule_workload(
    app: App,
    rng: random.Random,
    *,
    mutations: int = MUTATIONS,
    actions: int = ACTIONS,
    spread_ms: int = 3_000,
    accounts_count: int = ACCOUNTS,
) -> list[str]:
    accounts = [Account(f"acc-{i}") for i in range(accounts_count)]
    app.save(*accounts)
    ids = []
    for i in range(mutations):
        cents = -1 if i % 23 == 0 else rng.randint(1, 1000)  # a few fail on purpose
        account = str(rng.choice(accounts).id)
        delay = rng.randint(0, spread_ms)
        ids.append(app.scheduler.run_after(delay, TRANSFER, account, cents, 1))
    for i in range(actions):
        token = f"direct-{i}" + ("!" if i % 17 == 0 else "")
        ids.append(app.scheduler.run_after(rng.randint(0, spread_ms), EFFECT, token))
    return ids


def unfinished(app: App) -> int:
    view = app.scheduled_functions
    return sum(len(view.query(state=s, limit=1000).items) for s in ("pending", "inProgress"))


def wait_all_terminal(store: str, effects: str, deadline_s: float) -> None:
    observer = build_app(store, effects, LEASE_MS)
    try:
        deadline = time.monotonic() + deadline_s
        while (left := unfinished(observer)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert left == 0, f"{left} jobs still unfinished after {deadline_s} s"
    finally:
        observer.close()


def all_docs(app: App) -> list[dict[str, Any]]:
    page = app.scheduled_functions.query(limit=1000)
    docs = list(page.items)
    while page.cursor is not None:
        page = app.scheduled_functions.query(limit=1000, cursor=page.cursor)
        docs += page.items
    return docs


def check_mutation(doc: dict[str, Any], applied: int, stats: collections.Counter[str]) -> None:
    if doc["state"]["kind"] == "success":
        assert applied == 1, (doc["_id"], applied)  # its effect applied exactly once
        stats["mutations ok"] += 1
    else:
        assert DELIBERATE in doc["state"]["error"], doc["state"]["error"]
        assert applied == 0, doc["_id"]  # a failed mutation changed nothing
        stats["mutations failed"] += 1


def check_action(
    doc: dict[str, Any], types: list[str], effects: int, stats: collections.Counter[str]
) -> None:
    assert types.count("Started") == 1, (doc["_id"], types)  # at most once
    assert effects <= 1, (doc["_id"], effects)
    error = doc["state"].get("error", "")
    if doc["state"]["kind"] == "success":
        assert effects == 1
        stats["actions ok"] += 1
    elif error == CUT_OFF_ERROR:
        stats["actions cut off"] += 1  # cut off by a kill: failed, never run again
    else:
        assert DELIBERATE in error, error
        assert effects == 1
        stats["actions failed"] += 1


def check_guarantees(store: str, effects_path: Path) -> dict[str, int]:
    app = build_app(store, str(effects_path), LEASE_MS)
    try:
        docs = all_docs(app)
        effects = collections.Counter(effects_path.read_text().split())
        applied: collections.Counter[str] = collections.Counter()
        for account_id in {d["args"][0] for d in docs if d["name"] == TRANSFER}:
            applied.update(app.repository.get(uuid.UUID(account_id)).applied)
        children_of: collections.Counter[str] = collections.Counter()
        stats: collections.Counter[str] = collections.Counter()
        for doc in docs:
            job_id, kind = doc["_id"], doc["state"]["kind"]
            history = app.history(job_id)
            types = [e["type"] for e in history]
            assert kind in {"success", "failed"}, (job_id, kind)  # every job terminal
            assert types.count("Completed") == 1, (job_id, types)  # no history with two
            job = app.store.load_job(job_id)
            assert job is not None
            assert job.state.value == kind  # the view equals the state folded from the log
            assert doc["completedTime"] == float(job.completed_time_ms or 0)
            stats["retried"] += types.count("Retried")
            if history[0]["parent_id"] is not None:
                children_of[history[0]["parent_id"]] += 1
            if doc["name"] == TRANSFER:
                check_mutation(doc, applied[job_id], stats)
            else:
                check_action(doc, types, effects[job_id], stats)
        for doc in docs:
            if doc["name"] == TRANSFER:  # children are born with the commit, or never
                assert children_of[doc["_id"]] == (doc["state"]["kind"] == "success")
        stats["jobs"] = len(docs)
        return dict(stats)
    finally:
        app.close()
        pykka.ActorRegistry.stop_all(block=True, timeout=10)


def crash_run(tmp_path: Path, workers: int, options: str = "") -> None:
    db = tmp_path / "crash.db"
    effects = tmp_path / "effects.log"
    store = f"sqlite://{db}{options}"
    rng = random.Random(SEED + workers)
    scheduler = build_app(store, str(effects), LEASE_MS)
    try:
        total = len(schedule_workload(scheduler, rng))
    finally:
        scheduler.close()
    assert total >= 500
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SCHEDLOG_", "COLUMNS"))},
        "SCHEDLOG_STORE": store,
        "CRASH_EFFECTS": str(effects),
        "CRASH_LEASE_MS": str(LEASE_MS),
        "PYTHONPATH": str(ROOT),
        "PYTHONFAULTHANDLER": "1",
    }
    pool = [Worker(env, stderr=(tmp_path / f"worker-{i}.log").open("a")) for i in range(workers)]
    started = time.monotonic()
    for worker in pool:
        worker.start()
    kills = 0
    for k in range(KILLS):
        worker = pool[k % workers]  # each killed and restarted in turn
        for _ in range(rng.randint(1, 30)):
            if worker.next_line(timeout=5) is None:
                break  # nothing more to run right now: kill it anyway
        worker.kill()
        kills += 1
        worker.start()
    wait_all_terminal(store, str(effects), deadline_s=120)
    for worker in pool:
        assert worker.terminate() == 0
        worker.stderr.close()
    stats = check_guarantees(store, effects)
    elapsed = time.monotonic() - started
    print(f"\ncrash test, {workers} worker(s): {kills} kills, {stats} in {elapsed:.1f} s")
    assert stats["jobs"] == total + stats.get("mutations ok", 0)  # plus one child each


def test_one_worker_killed_repeatedly_keeps_every_guarantee(tmp_path: Path) -> None:
    crash_run(tmp_path, workers=1)


def test_two_workers_on_one_file_killed_in_turn_keep_every_guarantee(tmp_path: Path) -> None:
    crash_run(tmp_path, workers=2)


def test_a_worker_on_synchronous_normal_killed_repeatedly_keeps_every_guarantee(
    tmp_path: Path,
) -> None:
    """The opt-in gives up fsyncs, not a process crash's guarantees: the OS has every commit."""
    crash_run(tmp_path, workers=1, options="?synchronous=normal")
