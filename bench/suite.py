"""Benchmark suite (issue 6): schedlog against Huey 3.5 and APScheduler 3.11, on SQLite, in one run.

Every system runs the same job body (`bench._common.record`: append `index start_time pid` to a
sink file) with one worker of 4 slots; one client thread unless stated. Runs are interleaved
(run 1 of every system, then run 2, ...) so the machine's noise spreads over all of them; each
figure is the median of `--runs` runs, with min and max.

- W0 raw SQLite (WAL, synchronous=FULL): one INSERT + COMMIT per call; rows/s (the fsync floor).
  Beside it, for context, schedlog's own rows of one `run_at` written by hand through the driver
  (event, view row, counts, position), one commit per call: the floor of W1 with that schema.
- W1 schedule: one-shot jobs due in an hour, one durable call at a time (no worker); with 8
  client threads; and schedlog's batch form (`app.run_mutation`, 1,000 jobs per commit); jobs/s.
- W2 drain: jobs due now, (a) scheduled while the worker process runs: from the first call to the
  last job started; (b) already in the store: from the worker's ready line (or its first job, if
  earlier) to the last job started; jobs/s. All N are then checked finished in the store.
- W3 precision: jobs due at random over a few seconds, scheduled in due order from 1 s ahead;
  start lag = the body's start time - the due time; p50/p99/max, worker in this process and in
  another one. Beside it, the machine's floor: one thread that does nothing but sleep until
  each of the same due times (no store, no work), late by how long the OS takes to wake it.
- W4 cancel: jobs all due at one instant (3 s after the scheduling and cancels are expected to
  be done, from a probe of 20 calls), half canceled one call at a time before it; cancels/s, and
  how many canceled jobs ran anyway (the sink).
- W5 crash: jobs due within 2 s; the worker process is SIGKILLed once the sink shows K started,
  then restarted; how many jobs ran 0 / 1 / 2+ times, and their final states as each system
  can tell. schedlog's worker gets a 2 s lease here so that cut-off actions are failed soon.
- scale (schedlog): N pending jobs due in a day: worker start-up (spawn -> ready line, spawn ->
  first due job started), its VmRSS after start-up and after a W3 run, W3 with that backlog.

    bench/run-suite                                    # everything, the issue's sizes
    bench/run-suite --quick --runs 1 --scale 20000     # a smoke run
    bench/run-suite --only W1,W3 --systems schedlog,huey --json /tmp/suite.json
    bench/run-suite --only scale --reuse               # the filled 1M store is kept in /tmp
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import importlib.metadata
import json
import logging
import math
import os
import platform
import random
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from bench._common import ROOT, Sink, WorkerProcess, close_sinks, percentile
from bench.peers.sys_apscheduler import APScheduler
from bench.peers.sys_huey import Huey
from bench.peers.sys_schedlog import ACTION, Schedlog, SchedlogClient
from schedlog.events import ScheduledFunction
from schedlog.projections.schema import POSITION
from schedlog.projections.schema import TABLE as VIEW_TABLE
from schedlog.projections.view import SET_POSITION, VIEW_NAME
from schedlog.projections.writes import counts_statements

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from bench.peers.base import Client, System

WORKLOADS = ("W0", "W1", "W2", "W3", "W4", "W5", "scale")
FAMILIES = ("schedlog", "huey", "apscheduler")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
SCHEDLOG = "schedlog"
MUTATIONS = "schedlog (mutations)"
RAW = "sqlite3 (raw)"
SLEEPER = "a sleeping thread"

log = logging.getLogger("bench.suite")


@dataclass(frozen=True, slots=True)
class Sizes:
    jobs: int = 10_000
    """W0 rows, W1 and W2 jobs."""
    threads: int = 8
    batch: int = 1_000
    lag_jobs: int = 1_000
    lag_spread_s: float = 5.0
    lag_lead_s: float = 1.0
    cancel_jobs: int = 1_000
    cancel_lead_s: float = 3.0
    crash_jobs: int = 1_000
    crash_spread_ms: int = 2_000
    crash_kill_after: int = 300
    crash_lease_ms: int = 2_000


QUICK = Sizes(
    jobs=1_000,
    lag_jobs=200,
    lag_spread_s=2.0,
    cancel_jobs=200,
    crash_jobs=300,
    crash_kill_after=100,
)


# Figures.


@dataclass(slots=True)
class Figure:
    """One quantity for one system in one workload case: a value per run."""

    workload: str
    case: str
    system: str
    unit: str
    better: str
    """'higher', 'lower', or '' (a count or a fact, not a speed)."""
    values: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def _finite(self) -> list[float]:
        return [v for v in self.values if math.isfinite(v)]

    @property
    def median(self) -> float:
        finite = self._finite()
        return statistics.median(finite) if finite else math.nan

    @property
    def low(self) -> float:
        return min(self._finite(), default=math.nan)

    @property
    def high(self) -> float:
        return max(self._finite(), default=math.nan)


Key = tuple[str, str, str]
"""Where a figure goes: (workload, case, system)."""


class Results:
    def __init__(self) -> None:
        self.figures: dict[Key, Figure] = {}

    def add(
        self, key: Key, value: float, unit: str, *, better: str = "higher", note: str | None = None
    ) -> None:
        figure = self.figures.setdefault(key, Figure(*key, unit, better))
        figure.values.append(value)
        if note and note not in figure.notes:
            figure.notes.append(note)

    def get(self, key: Key) -> Figure | None:
        return self.figures.get(key)

    def median(self, key: Key) -> float:
        figure = self.figures.get(key)
        return math.nan if figure is None else figure.median


# The run's context.


@dataclass
class Bench:
    args: argparse.Namespace
    sizes: Sizes
    root: Path
    systems: list[System]
    results: Results = field(default_factory=Results)
    rng: random.Random = field(default_factory=lambda: random.Random(6))  # noqa: S311 - timings
    templates: dict[str, Path] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _scratch: int = 0

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A fresh directory for one measurement, removed afterwards."""
        self._scratch += 1
        path = self.root / f"m{self._scratch:04d}"
        path.mkdir()
        try:
            yield path
        finally:
            close_sinks()
            shutil.rmtree(path, ignore_errors=True)
            gc.collect()

    def say(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def attempt(self, what: str, measure: Callable[[], None]) -> None:
        """Run one measurement; a failure is reported and the suite goes on."""
        try:
            measure()
        except Exception as e:
            log.exception("%s failed", what)
            self.failures.append(f"{what}: {type(e).__name__}: {e}")


def run_in_threads(threads: int, work: Callable[[int], None]) -> float:
    """Run `work(k)` in `threads` threads started together; return the wall time in seconds."""
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def body(k: int) -> None:
        barrier.wait()
        try:
            work(k)
        except BaseException as e:
            errors.append(e)

    pool = [threading.Thread(target=body, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return elapsed


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_until(check: Callable[[], bool], timeout_s: float, every_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(every_s)
    return True


def wait_quiet(client: Client, sink: Sink, timeout_s: float, quiet_s: float = 2.5) -> bool:
    """Wait until the store holds nothing waiting or running and no job started for `quiet_s`.

    Both, for longer than Huey's scheduler tick: Huey moves due tasks from its schedule to its
    queue in two transactions, so for a moment they are in neither table.
    """
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    count = sink.poll()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if sink.poll() != count or client.unfinished():
            count, quiet_since = sink.poll(), time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return True
    return False


@contextlib.contextmanager
def opened(system: System, store: Path) -> Iterator[Client]:
    client = system.client(store)
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def worker_process(
    system: System, store: Path, directory: Path, env: dict[str, str] | None = None
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(system.worker(store, env), directory / "worker.log")
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@contextlib.contextmanager
def quiet(logger: str) -> Iterator[None]:
    """Silence `logger` below ERROR (schedlog warns on every batch of more than 800 jobs)."""
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


# W0: the fsync floor.


def w0_raw_sqlite(bench: Bench, run: int) -> None:
    n = bench.sizes.jobs
    with bench.scratch() as d:
        conn = sqlite3.connect(d / "raw.db")
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, due INTEGER, body TEXT)")
            conn.commit()
            body = json.dumps({"name": "bench:touch", "args": [str(d / "sink"), 0]})
            due = now_ms() + HOUR_MS
            t0 = time.perf_counter()
            for _ in range(n):
                conn.execute("INSERT INTO jobs (due, body) VALUES (?, ?)", (due, body))
                conn.commit()
            rate = n / (time.perf_counter() - t0)
        finally:
            conn.close()
    rows = w0_schedlog_rows(bench)
    bench.results.add(("W0", "INSERT + COMMIT", RAW), rate, "rows/s")
    bench.results.add(("W0", "schedlog's rows by hand", RAW), rows, "calls/s")
    bench.say(f"W0 run {run}: {rate:,.0f} rows/s; schedlog's rows by hand {rows:,.0f} calls/s")


def w0_schedlog_rows(bench: Bench) -> float:
    """What one schedule writes, by hand: one commit per call of the same rows schedlog writes.

    A store made by schedlog (its tables, indexes and page size) gets, per call, the rows of
    one `run_at`: its `Scheduled` event (a copy of a real one under a new id of schedlog's
    kind), the view row, the counts and the view's position, in the statements schedlog runs,
    then COMMIT. No Python above the driver: the SQLite floor for W1 with this schema (context,
    no target).
    """
    n = bench.sizes.jobs
    with bench.scratch() as d:
        path = d / "rows.db"
        app = Schedlog().client(path).app
        try:
            app.scheduler.run_at(now_ms() + HOUR_MS, ACTION, str(d / "sink"), 0)
        finally:
            app.close()
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            (topic, state) = conn.execute("SELECT topic, state FROM stored_events").fetchone()
            row = list(conn.execute(f"SELECT * FROM {VIEW_TABLE}").fetchone())  # noqa: S608
            marks = ", ".join("?" * len(row))
            first_id = row[0]
            insert_event = "INSERT INTO stored_events VALUES (?, 1, ?, ?)"
            insert_row = f"INSERT INTO {VIEW_TABLE} VALUES ({marks})"  # noqa: S608
            ((move_counts, one_pending),) = counts_statements({"pending": 1})
            t0 = time.perf_counter()
            for _ in range(n):
                job_id = str(ScheduledFunction.create_id(now_ms()))  # schedlog's own ids
                conn.execute("BEGIN")
                seq = conn.execute(insert_event, (job_id.replace("-", ""), topic, state)).lastrowid
                conn.execute(f"SELECT position FROM {POSITION} WHERE view = ?", (VIEW_NAME,))  # noqa: S608
                row[0], row[1] = job_id, seq
                conn.execute(insert_row, row)
                conn.execute(move_counts, one_pending)
                conn.execute(SET_POSITION, (VIEW_NAME, seq))
                conn.execute("COMMIT")
            rate = n / (time.perf_counter() - t0)
            assert first_id != row[0]  # noqa: S101 - the rows were new ones
        finally:
            conn.close()
    return rate


# W1: scheduling.


def w1_schedule(bench: Bench, system: System, run: int) -> None:
    n, threads = bench.sizes.jobs, bench.sizes.threads
    due = now_ms() + HOUR_MS
    with bench.scratch() as d, opened(system, system.store_file(d)) as client:
        sink = str(d / "sink")
        t0 = time.perf_counter()
        for i in range(n):
            client.schedule(sink, i, due)
        rate = n / (time.perf_counter() - t0)
        bench.results.add(("W1", "one thread", system.label), rate, "jobs/s")
        per_thread = n // threads

        def schedule_slice(k: int) -> None:
            first = n + k * per_thread
            for i in range(first, first + per_thread):
                client.schedule(sink, i, due)

        rate8 = per_thread * threads / run_in_threads(threads, schedule_slice)
        bench.results.add(("W1", f"{threads} threads", system.label), rate8, "jobs/s")
        line = f"W1 run {run} {system.label}: {rate:,.0f} jobs/s; {threads} threads {rate8:,.0f}"
        if isinstance(client, SchedlogClient):
            size = bench.sizes.batch
            batches = max(n // size, 1)
            with quiet("schedlog"):
                t0 = time.perf_counter()
                for b in range(batches):
                    client.schedule_batch(sink, 2 * n + b * size, size, due)
                rate_b = batches * size / (time.perf_counter() - t0)
            case = f"batch ({size:,} per mutation)"
            bench.results.add(("W1", case, system.label), rate_b, "jobs/s")
            line += f"; batch {rate_b:,.0f}"
    bench.say(line)


# W2: drain.


def fill_template(bench: Bench, system: System) -> Path:
    """A store holding N jobs due now, filled once per system and copied for each run.

    The jobs' sink is a fixed path beside it (a job's arguments name its sink).
    """
    if system.label in bench.templates:
        return bench.templates[system.label]
    directory = bench.root / f"template-{system.family}-{len(bench.templates)}"
    directory.mkdir()
    store = system.store_file(directory)
    sink = str(directory / "drain.sink")
    with opened(system, store) as client:
        for i in range(bench.sizes.jobs):
            client.schedule(sink, i, None)
    bench.templates[system.label] = store
    return store


def copy_store(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    for suffix in ("", "-wal"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")
    return dst


def drain_note(sink: Sink, n: int, run: int, *, done: bool) -> str | None:
    """What went wrong in a drain, if anything: jobs that did not finish, or ran twice."""
    problems = [] if done else [f"not all {n} finished"]
    if (twice := len(sink.entries) - len(sink.indexes)) > 0:
        problems.append(f"{twice} ran more than once")
    return f"run {run}: {', '.join(problems)}" if problems else None


def w2_drain(bench: Bench, system: System, run: int) -> None:
    n = bench.sizes.jobs
    timeout = max(n / 20, 120)  # 20 jobs/s at the very least
    with bench.scratch() as d:  # (a) scheduled while the worker runs
        store = system.store_file(d)
        sink = Sink(d / "sink")
        with opened(system, store) as client, worker_process(system, store, d):
            t0 = time.time()
            for i in range(n):
                client.schedule(str(sink.path), i, None)
            done = sink.wait_for(n, timeout, distinct=True)
            rate_a = n / (max(e.started for e in sink.entries) - t0) if done else math.nan
            finished = wait_until(lambda: client.unfinished() == 0, 60)
        note = drain_note(sink, n, run, done=done and finished)
        bench.results.add(("W2", "(a) while running", system.label), rate_a, "jobs/s", note=note)
    template = fill_template(bench, system)
    with bench.scratch() as d:  # (b) already in the store
        store = copy_store(template, d)
        (template.parent / "drain.sink").unlink(missing_ok=True)
        sink = Sink(template.parent / "drain.sink")
        with worker_process(system, store, d) as worker:
            done = sink.wait_for(n, timeout, distinct=True)
            if done:
                t0 = min(worker.ready_at, *(e.started for e in sink.entries))
                rate_b = n / (max(e.started for e in sink.entries) - t0)
            else:
                rate_b = math.nan
            with opened(system, store) as client:
                finished = wait_until(lambda: client.unfinished() == 0, 60)
        note = drain_note(sink, n, run, done=done and finished)
        bench.results.add(("W2", "(b) already stored", system.label), rate_b, "jobs/s", note=note)
    bench.say(f"W2 run {run} {system.label}: (a) {rate_a:,.0f} jobs/s, (b) {rate_b:,.0f} jobs/s")


# W3: precision.


@dataclass(frozen=True, slots=True)
class Lag:
    p50: float
    p99: float
    max: float
    ran: int
    late: int
    """Jobs whose scheduling call returned after their due time (not a precision sample)."""


def measure_lag(client: Client, sink: Sink, bench: Bench, first: int = 0) -> Lag:
    """Schedule W3's jobs (indexes from `first`) due at random over the spread, in due order
    from the lead on, and return the lags of their starts.
    """
    n, spread_s, lead_s = bench.sizes.lag_jobs, bench.sizes.lag_spread_s, bench.sizes.lag_lead_s
    offsets = sorted(bench.rng.randrange(int(spread_s * 1000)) for _ in range(n))
    expected = sink.poll() + n
    base = now_ms() + int(lead_s * 1000)
    due: dict[int, int] = {}
    late: set[int] = set()
    for k, offset in enumerate(offsets):
        index = first + k
        due[index] = base + offset
        client.schedule(str(sink.path), index, due[index])
        if time.time() * 1000 > due[index]:
            late.add(index)
    sink.wait_for(expected, timeout_s=spread_s + lead_s + 60, stall_s=30)
    lags: dict[int, float] = {}
    for e in sink.entries:  # a job's first start
        if e.index in due:
            lags.setdefault(e.index, e.started * 1000 - due[e.index])
    on_time = [lag for index, lag in lags.items() if index not in late]
    samples = on_time or list(lags.values()) or [math.nan]
    return Lag(
        percentile(samples, 0.5), percentile(samples, 0.99), max(samples), len(lags), len(late)
    )


def add_lag(bench: Bench, case: Key, lag: Lag) -> None:
    """Add p50, p99 and max under `case`: (workload, mode, system)."""
    workload, mode, label = case
    n = bench.sizes.lag_jobs
    note = None
    if lag.ran < n or lag.late:
        note = f"{lag.ran}/{n} ran, {lag.late} scheduled after due (left out)"
    for name, value in (("p50", lag.p50), ("p99", lag.p99), ("max", lag.max)):
        key = (workload, f"{mode} {name}", label)
        bench.results.add(key, value, "ms", better="lower", note=note)


def w3_floor(bench: Bench, run: int) -> None:
    """The lag of a timer that does nothing: a thread sleeping until each due time of W3's shape.

    No system can start jobs closer to their due times than the OS wakes a sleeping thread; on
    a loaded virtual machine that alone can be late by milliseconds (context for W3, no target).
    """
    n, spread_s = bench.sizes.lag_jobs, bench.sizes.lag_spread_s
    offsets = sorted(bench.rng.randrange(int(spread_s * 1000)) for _ in range(n))
    base = now_ms() + 100
    lags = []
    for offset in offsets:
        due = base + offset
        delay_s = due / 1000 - time.time()
        if delay_s > 0:
            time.sleep(delay_s)
        lags.append(time.time() * 1000 - due)
    lag = Lag(percentile(lags, 0.5), percentile(lags, 0.99), max(lags), n, 0)
    add_lag(bench, ("W3", "floor", SLEEPER), lag)
    bench.say(
        f"W3 run {run} floor: p50 {lag.p50:.2f} ms, p99 {lag.p99:.2f} ms, max {lag.max:.2f} ms"
    )


def w3_precision(bench: Bench, system: System, run: int) -> None:
    for mode in ("in-process", "other process"):
        with bench.scratch() as d, opened(system, system.store_file(d)) as client:
            sink = Sink(d / "sink")
            with contextlib.ExitStack() as stack:
                if mode == "in-process":
                    client.start_worker()
                    stack.callback(client.stop_worker)
                else:
                    stack.enter_context(worker_process(system, system.store_file(d), d))
                lag = measure_lag(client, sink, bench)
        add_lag(bench, ("W3", mode, system.label), lag)
        bench.say(
            f"W3 run {run} {system.label} {mode}: p50 {lag.p50:.2f} ms, p99 {lag.p99:.2f} ms,"
            f" max {lag.max:.2f} ms ({lag.late} late)"
        )


# W4: cancel.


def probe_ms_per_call(system: System, directory: Path) -> tuple[float, float]:
    """Time 20 scheduling calls and 20 cancels on a throwaway store (to pick W4's due time)."""
    probe = directory / "probe"
    probe.mkdir()
    with opened(system, system.store_file(probe)) as client:
        t0 = time.perf_counter()
        handles = [client.schedule(str(probe / "sink"), i, now_ms() + HOUR_MS) for i in range(20)]
        t1 = time.perf_counter()
        for handle in handles:
            client.cancel(handle)
        t2 = time.perf_counter()
    return (t1 - t0) / 20 * 1000, (t2 - t1) / 20 * 1000


def w4_cancel(bench: Bench, system: System, run: int) -> None:
    n = bench.sizes.cancel_jobs
    with bench.scratch() as d:
        store = system.store_file(d)
        sink = Sink(d / "sink")
        schedule_ms, cancel_ms = probe_ms_per_call(system, d)
        expected_ms = n * schedule_ms + n // 2 * cancel_ms
        due = now_ms() + int(bench.sizes.cancel_lead_s * 1000 + 2 * expected_ms)
        with opened(system, store) as client, worker_process(system, store, d):
            handles = [client.schedule(str(sink.path), i, due) for i in range(n)]
            canceled = set(range(1, n, 2))
            t0 = time.perf_counter()
            for i in sorted(canceled):
                client.cancel(handles[i])
            rate = len(canceled) / (time.perf_counter() - t0)
            in_time = now_ms() < due
            sink.wait_for(n - len(canceled), timeout_s=(due - now_ms()) / 1000 + 60, stall_s=30)
            wait_quiet(client, sink, timeout_s=60)
            states = client.states(handles)
        runs = sink.runs_per_index()
        ran_canceled = sum(runs[i] for i in canceled)
        ran_kept = sum(1 for i in range(n) if i not in canceled and runs[i] >= 1)
    note = None if in_time else f"run {run}: cancels ended after the due time"
    bench.results.add(("W4", "cancels/s", system.label), rate, "cancels/s", note=note)
    bench.results.add(
        ("W4", "canceled that ran", system.label), ran_canceled, "jobs", better="lower"
    )
    bench.results.add(("W4", "kept that ran", system.label), ran_kept, "jobs", better="")
    bench.say(
        f"W4 run {run} {system.label}: {rate:,.0f} cancels/s; canceled that ran {ran_canceled},"
        f" kept that ran {ran_kept}/{n - len(canceled)}; states {dict(collections.Counter(states))}"
    )


# W5: crash.


def w5_crash(bench: Bench, system: System, run: int) -> None:
    s = bench.sizes
    n = s.crash_jobs
    env = {"BENCH_LEASE_MS": str(s.crash_lease_ms)}
    with bench.scratch() as d:
        store = system.store_file(d)
        sink = Sink(d / "sink")
        with opened(system, store) as client:
            first = WorkerProcess(system.worker(store, env), d / "worker.log")
            first.start()
            seen_at_kill: list[int] = []

            def kill_when_started() -> None:
                sink.wait_for(s.crash_kill_after, timeout_s=120, stall_s=120)
                first.kill()
                seen_at_kill.append(sink.poll())

            killer = threading.Thread(target=kill_when_started)
            killer.start()
            handles = [
                client.schedule(
                    str(sink.path), i, now_ms() + bench.rng.randrange(s.crash_spread_ms)
                )
                for i in range(n)
            ]
            killer.join()
            second = WorkerProcess(system.worker(store, env), d / "worker.log")
            second.start()
            try:
                finished = wait_quiet(client, sink, timeout_s=120)
            finally:
                second.stop()
            states = client.states(handles)
            retried = None
            if isinstance(client, SchedlogClient):  # the log tells more: transient errors
                history = [client.app.history(h) for h in handles]
                retried = sum(e["type"] == "Retried" for events in history for e in events)
        runs = sink.runs_per_index()
    counts = [sum(1 for i in range(n) if runs[i] == k) for k in (0, 1)]
    counts.append(sum(1 for i in range(n) if runs[i] >= 2))
    # A job that never ran is accounted for only if the system says it failed (schedlog: an
    # action cut off by the kill after its `Started`); any other job that never ran was lost.
    lost = sum(1 for i in range(n) if runs[i] == 0 and states[i] != "failed")
    note = None if finished else f"run {run}: not all finished within 120 s of the restart"
    label, r = system.label, bench.results
    r.add(("W5", "started at the kill", label), seen_at_kill[0], "jobs", better="", note=note)
    rerun = None
    if label == MUTATIONS and counts[2]:
        rerun = "a body that ran in an attempt killed before its commit ran again (S14)"
    r.add(("W5", "ran 0 times", label), counts[0], "jobs", better="")
    r.add(("W5", "ran once", label), counts[1], "jobs", better="")
    r.add(("W5", "ran 2+ times", label), counts[2], "jobs", better="", note=rerun)
    r.add(("W5", "lost (ran 0, not failed)", label), lost, "jobs", better="lower")
    for state, count in sorted(collections.Counter(states).items()):
        r.add(("W5", f"final state: {state}", label), count, "jobs", better="")
    if retried is not None:
        r.add(("W5", "Retried events (in the log)", label), retried, "events", better="")
    bench.say(
        f"W5 run {run} {label}: killed at {seen_at_kill[0]} started; ran 0/1/2+ = {counts};"
        f" states {dict(collections.Counter(states))}"
    )


# Scale: schedlog with a backlog.


def scale_store(bench: Bench) -> Path:
    n = bench.args.scale
    if bench.args.reuse:
        path = bench.args.scale_path or Path(tempfile.gettempdir()) / f"schedlog-suite-{n}.db"
        if path.exists() and not backlog_ok(path, n):
            bench.say(f"scale: {path} does not hold {n:,} jobs due in over an hour: refilling")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        path = bench.root / "scale" / "schedlog.db"
        path.parent.mkdir()
    if path.exists():
        bench.notes.append(f"scale store reused (--reuse): {path}")
        return path
    client = SchedlogClient(path, ACTION)
    size = bench.sizes.batch
    due = now_ms() + DAY_MS
    bench.say(f"scale: filling {n:,} jobs due in a day, {size:,} per app.run_mutation ...")
    try:
        with quiet("schedlog"):
            t0 = time.perf_counter()
            for first in range(0, n, size):
                client.schedule_batch("/dev/null", first, min(size, n - first), due)
                if (first // size) % 100 == 99:
                    rate = (first + size) / (time.perf_counter() - t0)
                    bench.say(f"  {first + size:>10,} jobs ({rate:,.0f} jobs/s)")
            rate = n / (time.perf_counter() - t0)
    finally:
        client.close()
    bench.results.add(("scale", "fill (batch form)", SCHEDLOG), rate, "jobs/s")
    return path


def backlog_ok(path: Path, n: int) -> bool:
    client = SchedlogClient(path, ACTION)
    try:
        if client.app.stats().counts["pending"] < n:
            return False
        page = client.app.scheduled_functions.query(state="pending", limit=1)
        return bool(page.items) and page.items[0]["scheduledTime"] > now_ms() + HOUR_MS
    finally:
        client.close()


def scale(bench: Bench) -> None:
    store = scale_store(bench)
    size = sum(f.stat().st_size for f in store.parent.glob(store.name + "*"))
    client = SchedlogClient(store, ACTION)
    try:
        pending = client.app.stats().counts["pending"]
    finally:
        client.close()
    bench.notes.append(f"scale store {store}: {pending:,} pending jobs, {size / 2**20:,.0f} MiB")
    for run in range(1, bench.args.runs + 1):
        bench.attempt(f"scale run {run}", lambda run=run: scale_run(bench, store, run))


def scale_run(bench: Bench, store: Path, run: int) -> None:
    """Start a worker on the backlog, time it, take its VmRSS, then W3 in both modes."""
    system, first = Schedlog(), 10_000_000 * run
    with bench.scratch() as d, opened(system, store) as client:
        sink = Sink(d / "sink")
        client.schedule(str(sink.path), first, None)  # due now: the first job to start
        with worker_process(system, store, d) as worker:
            sink.wait_for(1, timeout_s=120)
            first_s = sink.entries[0].started - worker.spawned_at if sink.entries else math.nan
            rss_start = worker.rss_mib()
            lag = measure_lag(client, sink, bench, first + 1)
            rss_after = worker.rss_mib()
        client.start_worker()
        try:
            lag_in = measure_lag(client, sink, bench, first + 2_000_000)
        finally:
            client.stop_worker()
    add_lag(bench, ("scale", "W3 other process", SCHEDLOG), lag)
    add_lag(bench, ("scale", "W3 in-process", SCHEDLOG), lag_in)
    ready_s = worker.ready_at - worker.spawned_at
    r = bench.results
    r.add(("scale", "start-up: spawn -> ready", SCHEDLOG), ready_s, "s", better="lower")
    r.add(("scale", "start-up: spawn -> first job", SCHEDLOG), first_s, "s", better="lower")
    r.add(("scale", "VmRSS after start-up", SCHEDLOG), rss_start, "MiB", better="lower")
    r.add(("scale", "VmRSS after W3", SCHEDLOG), rss_after, "MiB", better="lower")
    bench.say(
        f"scale run {run} ({bench.args.scale:,} pending): ready {ready_s:.2f} s, first job"
        f" {first_s:.2f} s, VmRSS {rss_start:.0f} -> {rss_after:.0f} MiB; W3 other process"
        f" p50 {lag.p50:.2f} p99 {lag.p99:.2f} ms; in-process p50 {lag_in.p50:.2f}"
        f" p99 {lag_in.p99:.2f} ms"
    )


# Targets (issue 6).


@dataclass(slots=True)
class Target:
    name: str
    value: str
    passed: bool | None
    """None: not measured in this run."""
    rows: list[Key]
    """The figures it judges; the first is marked in the workload's table."""


class Targets:
    def __init__(self, results: Results) -> None:
        self.results = results
        self.items: list[Target] = []

    def check(self, name: str, value: str, rows: list[Key], *, passed: bool) -> None:
        """Record a verdict; it is 'not measured' if any of `rows` was not."""
        measured = all(self.results.get(row) is not None for row in rows)
        self.items.append(
            Target(name, value if measured else "-", passed if measured else None, rows)
        )

    def at_least(self, name: str, row: Key, floor: float) -> None:
        value = self.results.median(row)
        self.check(name, f"{value:,.0f}", [row], passed=value >= floor)

    def at_most(self, name: str, row: Key, limit: float, unit: str) -> None:
        value = self.results.median(row)
        self.check(name, f"{value:,.2f} {unit}", [row], passed=value <= limit)

    def ratio(self, name: str, row: Key, base: Key, floor: float) -> None:
        value = self.results.median(row) / self.results.median(base)
        self.check(name, f"{value:.2f}x", [row, base], passed=value >= floor)

    def worst(self, row: Key) -> float:
        """The worst value of `row` over the runs (a guarantee must hold in every run)."""
        figure = self.results.get(row)
        return math.nan if figure is None else figure.high


def evaluate(results: Results, sizes: Sizes) -> list[Target]:
    t, m = Targets(results), results.median
    one = ("W1", "one thread", SCHEDLOG)
    t.ratio("W1 one thread >= 0.9x W0", one, ("W0", "INSERT + COMMIT", RAW), 0.9)
    many = ("W1", f"{sizes.threads} threads", SCHEDLOG)
    t.ratio(f"W1 {sizes.threads} threads >= 3x one thread", many, one, 3)
    batch = ("W1", f"batch ({sizes.batch:,} per mutation)", SCHEDLOG)
    t.at_least("W1 batch >= 20,000 jobs/s", batch, 20_000)
    t.at_least("W2(b) actions >= 5,000/s", ("W2", "(b) already stored", SCHEDLOG), 5_000)
    t.at_least("W2(b) mutations >= 3,000/s", ("W2", "(b) already stored", MUTATIONS), 3_000)
    peers = [k for k in results.figures if k[:2] == ("W2", "(a) while running")]
    peers = [k for k in peers if k[2] not in {SCHEDLOG, MUTATIONS}]
    best = max((m(k) for k in peers), default=math.nan)
    for label in (SCHEDLOG, MUTATIONS):
        row = ("W2", "(a) while running", label)
        value = f"{m(row):,.0f} vs best peer {best:,.0f}"
        t.check(f"W2(a) {label} ahead of every peer", value, [row, *peers], passed=m(row) > best)
    lags = [("W3", "", label) for label in (SCHEDLOG, MUTATIONS)] + [("scale", "W3 ", SCHEDLOG)]
    for workload, prefix, label in lags:
        for mode in ("in-process", "other process"):
            p50, p99 = (
                (workload, f"{prefix}{mode} p50", label),
                (workload, f"{prefix}{mode} p99", label),
            )
            name = f"W3 {label} {mode}: p50 <= 1 ms, p99 <= 2.5 ms"
            if workload == "scale":
                name = f"scale: W3 {mode} unchanged with the backlog (same limits)"
            value = f"{m(p50):.2f} / {m(p99):.2f} ms"
            t.check(name, value, [p50, p99], passed=m(p50) <= 1 and m(p99) <= 2.5)
    ours, huey = ("W4", "cancels/s", SCHEDLOG), ("W4", "cancels/s", "huey")
    value = f"{m(ours):,.0f} vs {m(huey):,.0f}"
    t.check("W4 cancels/s ahead of Huey", value, [ours, huey], passed=m(ours) > m(huey))
    ran = ("W4", "canceled that ran", SCHEDLOG)
    t.check(
        "W4 none of the canceled ran (every run)",
        f"{t.worst(ran):g}",
        [ran],
        passed=t.worst(ran) == 0,
    )
    lost, dup = ("W5", "lost (ran 0, not failed)", SCHEDLOG), ("W5", "ran 2+ times", SCHEDLOG)
    value = f"lost {t.worst(lost):g}, ran twice {t.worst(dup):g}"
    no_loss = t.worst(lost) == 0 and t.worst(dup) == 0
    t.check("W5 actions: no loss, no duplicates (every run)", value, [lost, dup], passed=no_loss)
    done = ("W5", "final state: success", MUTATIONS)
    fewest = results.get(done).low if results.get(done) else math.nan
    value = f"fewest {fewest:g} of {sizes.crash_jobs:,}"
    t.check(
        "W5 mutations: every job committed, every run",
        value,
        [done],
        passed=fewest == sizes.crash_jobs,
    )
    first = ("scale", "start-up: spawn -> first job", SCHEDLOG)
    t.at_most("scale: start-up (spawn -> first due job) < 5 s", first, 5, "s")
    rss = [("scale", "VmRSS after start-up", SCHEDLOG), ("scale", "VmRSS after W3", SCHEDLOG)]
    most = max(m(row) for row in rss)
    t.check("scale: worker VmRSS < 300 MB", f"{most:,.0f} MiB", rss, passed=most * 2**20 < 300e6)
    return [target for target in t.items if target.passed is not None]


# Reporting.


def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit in {"ms", "s"}:
        return f"{value:,.2f}"
    if unit in {"jobs", "events"}:
        return f"{value:g}"
    return f"{value:,.0f}"


def verdict(target: Target) -> str:
    return {True: "[green]PASS[/]", False: "[red]MISS[/]", None: "n/a"}[target.passed]


def ratio_cell(results: Results, figure: Figure) -> str:
    """schedlog's median / this peer's, for each schedlog row of the same case."""
    if figure.system in {SCHEDLOG, MUTATIONS, RAW, SLEEPER} or not figure.better:
        return ""
    cells = []
    for label, short in ((SCHEDLOG, ""), (MUTATIONS, "mut ")):
        ours = results.median((figure.workload, figure.case, label))
        if not math.isnan(ours) and figure.median:
            cells.append(f"{short}{ours / figure.median:.2f}")
    return "  ".join(cells)


def workload_table(
    workload: str, figures: list[Figure], bench: Bench, marks: dict[Key, str]
) -> Table:
    runs = max(len(f.values) for f in figures)
    title = f"{workload}: median of {runs} run(s), min - max"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("case", "system"):
        table.add_column(column)
    for column in ("median", "min - max", "unit", "schedlog / peer"):
        table.add_column(column, justify="right")
    table.add_column("target", justify="center")
    cases = list(dict.fromkeys(f.case for f in figures))  # in the order they were measured
    for figure in sorted(figures, key=lambda f: cases.index(f.case)):
        key = (figure.workload, figure.case, figure.system)
        table.add_row(
            figure.case,
            figure.system,
            fmt(figure.median, figure.unit),
            f"{fmt(figure.low, figure.unit)} - {fmt(figure.high, figure.unit)}",
            figure.unit,
            ratio_cell(bench.results, figure),
            marks.get(key, ""),
        )
    return table


def render(console: Console, bench: Bench, targets: list[Target]) -> None:
    marks: dict[Key, str] = {}
    for target in targets:
        key = target.rows[0]
        marks[key] = f"{marks[key]} {verdict(target)}" if key in marks else verdict(target)
    for workload in WORKLOADS:
        figures = [f for f in bench.results.figures.values() if f.workload == workload]
        if figures:
            console.print(workload_table(workload, figures, bench, marks))
            for f in figures:
                for note in f.notes:
                    console.print(f"  note: {f.system}, {f.case}: {note}", markup=False)
            console.print()
    table = Table(
        title="Targets (issue 6): on medians unless stated",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column in ("target", "measured", "verdict"):
        table.add_column(column)
    for target in targets:
        table.add_row(target.name, target.value, verdict(target))
    console.print(table)
    console.print(
        "schedlog / peer: schedlog's median over the peer's; for rates > 1 means schedlog is "
        "ahead, for lags < 1 does; 'mut' compares schedlog's mutations."
    )
    for note in bench.notes:
        console.print(f"note: {note}", markup=False)
    for failure in bench.failures:
        console.print(f"failed: {failure}", style="red", markup=False)


def machine() -> dict[str, str]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model or platform.processor(),
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "load": load(),
    }


def load() -> str:
    """The load averages (1, 5, 15 min): other work on the machine skews every figure."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def versions() -> dict[str, str]:
    found = {}
    for dist in ("schedlog", "eventsourcing", "huey", "apscheduler", "sqlalchemy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
        changed = [line[3:] for line in dirty.stdout.splitlines()]
        found["git"] = head.stdout.strip() + (
            f" + uncommitted changes to {', '.join(changed)}" if changed else ""
        )
    return found


def no_nan(value: object) -> object:
    """`value` with NaN (not measured) as null, so that the JSON is standard."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [no_nan(v) for v in value]
    return value


def systems_for(workload: str, bench: Bench) -> list[System]:
    """W1 and W4 run schedlog's actions only; W2, W3 and W5 run its mutations too."""
    both = workload in {"W2", "W3", "W5"}
    return [s for s in bench.systems if both or s.label != MUTATIONS]


DRIVERS: dict[str, Callable[[Bench, System, int], None]] = {
    "W1": w1_schedule,
    "W2": w2_drain,
    "W3": w3_precision,
    "W4": w4_cancel,
    "W5": w5_crash,
}


def run_workload(bench: Bench, key: str) -> None:
    runs = range(1, bench.args.runs + 1)
    if key == "W0":
        for run in runs:
            bench.attempt(f"W0 run {run}", lambda run=run: w0_raw_sqlite(bench, run))
    elif key == "scale":
        if bench.args.scale <= 0 or not any(s.family == "schedlog" for s in bench.systems):
            bench.say("scale: skipped")
            return
        bench.attempt("scale", lambda: scale(bench))  # each run is an attempt of its own
    else:
        for run in runs:  # interleaved: run 1 of every system, then run 2, ...
            if key == "W3":
                bench.attempt(f"W3 run {run} floor", lambda run=run: w3_floor(bench, run))
            for system in systems_for(key, bench):
                bench.attempt(
                    f"{key} run {run} {system.label}",
                    lambda s=system, run=run: DRIVERS[key](bench, s, run),
                )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run-suite",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
    )
    add = parser.add_argument
    add("--runs", type=int, default=3, help="runs per figure (default 3)")
    add("--only", default=",".join(WORKLOADS), help="workloads to run (default: all), e.g. W1,W3")
    add("--systems", default=",".join(FAMILIES), help="systems (default: all three)")
    add("--quick", action="store_true", help="small sizes: 1,000 jobs for W0-W2, 200 for W3/W4")
    add("--scale", type=int, default=1_000_000, help="pending jobs for scale; 0 skips it")
    add(
        "--reuse",
        action="store_true",
        help="keep the filled scale store (default /tmp/schedlog-suite-N.db) and reuse it",
    )
    add("--scale-path", type=Path, help="where --reuse keeps the scale store")
    add("--tmp", type=Path, help="where the temp stores go (default: $TMPDIR)")
    add("--json", type=Path, help="also write every figure and target to this JSON file")
    args = parser.parse_args(argv)
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    args.systems = [s.strip().lower() for s in args.systems.split(",") if s.strip()]
    canonical = {w.lower(): w for w in WORKLOADS}
    if unknown := [w for w in args.only if w.lower() not in canonical]:
        parser.error(f"unknown workload {unknown[0]!r} (known: {', '.join(WORKLOADS)})")
    args.only = [canonical[w.lower()] for w in args.only]
    if unknown := [s for s in args.systems if s not in FAMILIES]:
        parser.error(f"unknown system {unknown[0]!r} (known: {', '.join(FAMILIES)})")
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    return args


def print_header(console: Console, meta: dict[str, Any]) -> None:
    mach = meta["machine"]
    lines = [
        f"command : {meta['command']}",
        (
            f"machine : {mach['cpus']} CPUs ({mach['cpu']}), {mach['kernel']}, "
            f"Python {mach['python']}, SQLite {mach['sqlite']}; load average {mach['load']}"
        ),
        "versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "sizes   : " + ", ".join(f"{k}={v}" for k, v in meta["sizes"].items()),
        *(f"system  : {label}: {settings}" for label, settings in meta["systems"].items()),
        "",
    ]
    for line in lines:
        console.print(line, soft_wrap=True, markup=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sizes = QUICK if args.quick else Sizes()
    every = [Schedlog(), Schedlog(mutations=True), Huey(), APScheduler()]
    systems = [s for s in every if s.family in args.systems]
    width = None if sys.stdout.isatty() else 150
    console = Console(width=width, highlight=False)
    meta = {
        "command": shlex.join([sys.executable, "-m", "bench.suite", *(argv or sys.argv[1:])]),
        "machine": machine(),
        "versions": versions(),
        "sizes": asdict(sizes),
        "runs": args.runs,
        "scale": args.scale,
        "systems": {s.label: s.settings for s in systems if s.label != MUTATIONS},
    }
    print_header(console, meta)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="schedlog-suite-", dir=args.tmp) as tmp:
        bench = Bench(args, sizes, Path(tmp), systems)
        for key in args.only:
            t0 = time.perf_counter()
            run_workload(bench, key)
            bench.say(f"{key}: {time.perf_counter() - t0:.0f} s (load average now {load()})")
    targets = evaluate(bench.results, sizes)
    meta["load_at_end"] = load()
    elapsed = time.perf_counter() - started
    console.print(f"suite ran {elapsed:.0f} s; load average at the end {meta['load_at_end']}")
    console.print()
    render(console, bench, targets)
    if args.json:
        figures = [
            asdict(f) | {"median": f.median, "min": f.low, "max": f.high}
            for f in bench.results.figures.values()
        ]
        document = meta | {
            "figures": figures,
            "targets": [asdict(t) for t in targets],
            "failures": bench.failures,
            "notes": bench.notes,
        }
        args.json.write_text(json.dumps(no_nan(document), indent=2) + "\n")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
