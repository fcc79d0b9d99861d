"""PostgreSQL benchmark (issue 5): schedlog on 1, 2 and 3 nodes beside Procrastinate 3.10.

Every figure comes from one run of this script, on one PostgreSQL server. For each system and
node count (a node: a `schedlog run` process, or a `procrastinate` worker, 4 slots each), in a
fresh schema that is dropped afterwards:

1. drain: `--jobs` trivial jobs due now are put in the store (schedlog: the batch form,
   `app.run_mutation(fill, first, 1000)` scheduling 1,000 mutations per commit; Procrastinate:
   `task.batch_defer` of 1,000 jobs per call), then the nodes start; drain jobs/s = jobs / (time
   the bench saw the last one succeed - time the first one started).
2. schedule: with the nodes running and idle, `--schedule-jobs` one-at-a-time calls
   (`app.scheduler.run_after(3_600_000, ...)`; `task.configure(schedule_in=1 h).defer()`) from
   this process, a client that is not a node; jobs/s of the client. They are due in an hour and
   never run.
3. lag: `--lag-jobs` jobs due at random times over `--lag-spread` seconds (`run_at` /
   `schedule_at`, one call each, all made before the first is due); each body records
   `time.time()` as it starts; lag = start - due; p50/p99/max over the jobs. schedlog runs this
   phase twice in a row on the same nodes: with actions (claimed by a commit, then run, like a
   Procrastinate job; two commits per job) and with mutations (run, then one commit).
   Procrastinate's lag is measured at its default poll (5 s) and, with one worker, at each
   `--procrastinate-fast-poll` (default 50 ms).

Each job body appends `index start_time pid` to a sink file (bench/pg_workers.py), so the bench
also reports how many jobs each node ran. Runs are interleaved (run 1 of every configuration,
then run 2, ...) so that the machine's noise spreads over all of them; the table shows medians
over `--runs` with min-max.

Run it as a module of the `bench` package, from the repository root (the nodes import
`bench.pg_workers` the same way):

    .venv/bin/python -m bench.pg_bench                                # the issue's figures
    .venv/bin/python -m bench.pg_bench --runs 1 --jobs 2000 --lag-jobs 200 --nodes 1,2
    .venv/bin/python -m bench.pg_bench --systems schedlog --nodes 1 --json /tmp/pg.json

Targets (issue 5): drain >= 3x Procrastinate (one node of 4 slots each), lag p99 < 20 ms, more
jobs/s with 2 nodes than with 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import queue
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import psycopg
from rich.console import Console
from rich.table import Table

from bench._common import Sink, percentile
from bench.pg_workers import (
    FILL,
    PROC_TASK,
    READY,
    SINK_ENV,
    SLOTS_ENV,
    TOUCH,
    TOUCH_ACTION,
    build_app,
    build_procrastinate,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import procrastinate

    from schedlog import App

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
FILL_BATCH = 1000
"""Jobs per fill commit (S10: a mutation schedules at most 1,000)."""
LAG_BASE = 1_000_000
"""Sink index of the first lag phase's job 0 (drain jobs are 0..jobs-1); the next phase's
jobs start LAG_BASE further on."""
FAR_BASE = 100_000_000
"""Index of the schedule phase's jobs (due in an hour: they never run)."""
FAR_MS = 3_600_000
POLL_S = 0.05
"""How often the bench checks progress (store counts, sink file)."""
READY_TIMEOUT_S = 120
PROCRASTINATE_DEFAULT_POLL_S = 5.0
TARGET_DRAIN_RATIO = 3.0
TARGET_P99_MS = 20.0
SCHEDLOG_LAG_FUNCTIONS = {"action": TOUCH_ACTION, "mutation": TOUCH}


# Options.


@dataclass(frozen=True, slots=True)
class Options:
    dsn: str
    runs: int
    nodes: tuple[int, ...]
    jobs: int
    lag_jobs: int
    lag_spread_s: float
    schedule_jobs: int
    slots: int
    systems: tuple[str, ...]
    lag_kinds: tuple[str, ...]
    fast_polls: tuple[float, ...]
    json_path: Path | None
    seed: int


def _int_list(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2,3, got {text!r}")
    return values


def _float_list(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("BENCH_PG_DSN", DEFAULT_DSN))
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (medians)")
    parser.add_argument("--nodes", type=_int_list, default=(1, 2, 3), help="e.g. 1,2,3")
    parser.add_argument("--jobs", type=int, default=10_000, help="drain: jobs due now")
    parser.add_argument("--lag-jobs", type=int, default=1_000, help="lag: jobs due over the spread")
    parser.add_argument("--lag-spread", type=float, default=5.0, help="lag: spread (s)")
    parser.add_argument(
        "--schedule-jobs", type=int, default=2_000, help="schedule: one-at-a-time calls"
    )
    parser.add_argument("--slots", type=int, default=4, help="concurrency of each node")
    parser.add_argument(
        "--systems",
        default="schedlog,procrastinate",
        help="comma-separated: schedlog, procrastinate",
    )
    parser.add_argument(
        "--lag-kinds",
        default="action,mutation",
        help="schedlog's lag phases, in order: action (claimed by a commit, then run), mutation"
        " (run, then committed); the first also serves the schedule phase",
    )
    parser.add_argument(
        "--procrastinate-fast-poll",
        type=_float_list,
        default=(0.05,),
        help="extra Procrastinate polls (s) measured for lag with one worker ('' for none)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    unknown = set(systems) - {"schedlog", "procrastinate"}
    if unknown or not systems:
        parser.error(f"--systems: unknown {sorted(unknown)}")
    lag_kinds = tuple(k.strip() for k in args.lag_kinds.split(",") if k.strip())
    if not lag_kinds or set(lag_kinds) - set(SCHEDLOG_LAG_FUNCTIONS):
        parser.error(f"--lag-kinds: expected action and/or mutation, got {args.lag_kinds!r}")
    return Options(
        dsn=args.dsn,
        runs=args.runs,
        nodes=args.nodes,
        jobs=args.jobs,
        lag_jobs=args.lag_jobs,
        lag_spread_s=args.lag_spread,
        schedule_jobs=args.schedule_jobs,
        slots=args.slots,
        systems=systems,
        lag_kinds=lag_kinds,
        fast_polls=args.procrastinate_fast_poll,
        json_path=args.json,
        seed=args.seed,
    )


def with_query(dsn: str, **params: str) -> str:
    sep = "&" if "?" in dsn else "?"
    return dsn + sep + "&".join(f"{k}={v}" for k, v in params.items())


def drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# The sink: one line per job start.


class PhaseSink(Sink):
    """The suite's sink reader, with each job's first start and counts over index ranges."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.first: dict[int, tuple[float, int]] = {}
        """Each job index's first start time and pid."""

    def refresh(self) -> None:
        read = len(self.entries)
        self.poll()
        for e in self.entries[read:]:
            seen = self.first.get(e.index)
            if seen is None or e.started < seen[0]:
                self.first[e.index] = (e.started, e.pid)

    def count_in(self, lo: int, hi: int) -> int:
        return sum(1 for i in self.first if lo <= i < hi)

    def per_pid(self, lo: int, hi: int) -> dict[int, int]:
        counts: dict[int, int] = {}
        for e in self.entries:
            if lo <= e.index < hi:
                counts[e.pid] = counts.get(e.pid, 0) + 1
        return counts


# Node processes.


class Node:
    """One worker process; a thread reads its stdout into a queue (to see its ready line)."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        stdout = self.proc.stdout
        if stdout is None:
            raise RuntimeError("no stdout pipe")

        def pump() -> None:
            for line in stdout:
                self.lines.put(line.strip())
            self.lines.put(None)

        self.reader = threading.Thread(target=pump, daemon=True)
        self.reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, marker: str, deadline: float) -> None:
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                line = None
            if line is None:
                raise RuntimeError(f"node {self.pid} printed no ready line; see {self.log.name}")
            if marker in line:
                return

    def signal_stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful for both systems

    def wait(self, timeout_s: float = 60) -> int:
        """Return the exit status (SIGKILL after `timeout_s`: -9)."""
        try:
            status = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait(timeout=30)
        self.reader.join(timeout=10)
        self.log.close()
        return status


@contextlib.contextmanager
def node_group(
    system: System, env: dict[str, str], count: int, logs: Path, statuses: list[int]
) -> Iterator[list[Node]]:
    """Start `count` nodes of `system` at once; wait for every ready line; SIGTERM them after.

    Their exit statuses are appended to `statuses` (0: a graceful stop).
    """
    nodes: list[Node] = []
    try:
        argv = system.node_argv()
        nodes.extend(Node(argv, env, logs / f"node-{i}.log") for i in range(count))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for node in nodes:
            node.wait_ready(system.marker, deadline)
        yield nodes
    finally:
        for node in nodes:
            node.signal_stop()
        statuses.extend(node.wait() for node in nodes)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDLOG_", "COLUMNS"))}
    env.update(extra)
    return env


# CPU accounting from /proc (cores busy over an interval).

TICKS = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _postgres_cpu_s() -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    total += _proc_cpu_s(int(entry.name))
    return total


def _machine_ticks() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields), idle


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    at: float
    nodes_s: float
    postgres_s: float
    bench_s: float
    machine: tuple[int, int]

    @classmethod
    def take(cls, pids: list[int]) -> CpuSnapshot:
        return cls(
            time.monotonic(),
            sum(_proc_cpu_s(p) for p in pids),
            _postgres_cpu_s(),
            _proc_cpu_s(os.getpid()),
            _machine_ticks(),
        )

    def cores_since(self, before: CpuSnapshot) -> dict[str, float]:
        """Cores busy between the snapshots: the nodes, PostgreSQL, this process, the machine."""
        wall = max(self.at - before.at, 1e-9)
        total = self.machine[0] - before.machine[0]
        idle = self.machine[1] - before.machine[1]
        return {
            "nodes": round((self.nodes_s - before.nodes_s) / wall, 2),
            "postgres": round((self.postgres_s - before.postgres_s) / wall, 2),
            "bench": round((self.bench_s - before.bench_s) / wall, 2),
            "machine": round((total - idle) / max(total, 1) * (os.cpu_count() or 1), 2),
        }


# The systems: one adapter each.


class System(Protocol):
    """What the driver needs of a job system on one fresh schema."""

    marker: str
    lag_kinds: tuple[str, ...]

    def fill(self, count: int) -> None: ...
    def finished(self) -> tuple[int, int]: ...  # (succeeded, failed)
    def schedule_far(self, index: int) -> None: ...
    def schedule_at(self, index: int, due_s: float, kind: str) -> None: ...
    def node_argv(self) -> list[str]: ...
    def node_env(self, sink: Path) -> dict[str, str]: ...
    def close(self) -> None: ...


class Schedlog:
    """schedlog nodes (`schedlog run pg_workers:app`) on `?schema=`; this process schedules."""

    marker = "schedlog worker "

    def __init__(self, opts: Options, schema: str) -> None:
        self.dsn, self.schema, self.slots = opts.dsn, schema, opts.slots
        self.lag_kinds = opts.lag_kinds
        self.store = with_query(opts.dsn, schema=schema)
        self.client: App = build_app(self.store, max_concurrency=opts.slots)

    def fill(self, count: int) -> None:
        for first in range(0, count, FILL_BATCH):
            self.client.run_mutation(FILL, first, min(FILL_BATCH, count - first))

    def finished(self) -> tuple[int, int]:
        counts = self.client.scheduled_functions.stats(int(time.time() * 1000)).counts
        return counts["success"], counts["failed"]

    def schedule_far(self, index: int) -> None:
        fn = SCHEDLOG_LAG_FUNCTIONS[self.lag_kinds[0]]
        self.client.scheduler.run_after(FAR_MS, fn, index)

    def schedule_at(self, index: int, due_s: float, kind: str) -> None:
        self.client.scheduler.run_at(round(due_s * 1000), SCHEDLOG_LAG_FUNCTIONS[kind], index)

    def node_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "schedlog",
            "--store",
            self.store,
            "run",
            "bench.pg_workers:app",
            "--log-level",
            "WARNING",
            "--grace",
            "10",
        ]

    def node_env(self, sink: Path) -> dict[str, str]:
        return clean_env(**{SINK_ENV: str(sink), SLOTS_ENV: str(self.slots)})

    def close(self) -> None:
        self.client.close()
        drop_schema(self.dsn, self.schema)


class Procrastinate:
    """Procrastinate workers on their own schema (search_path); this process defers."""

    marker = READY
    lag_kinds = ("task",)

    def __init__(self, opts: Options, schema: str, poll_s: float) -> None:
        self.dsn, self.schema, self.slots, self.poll_s = opts.dsn, schema, opts.slots, poll_s
        with psycopg.connect(opts.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        self.conninfo = with_query(opts.dsn, options=quote(f"-c search_path={schema}", safe=""))
        self.client: procrastinate.App = build_procrastinate(self.conninfo, worker=False)
        self.client.open()
        self.client.schema_manager.apply_schema()
        self.task = self.client.tasks[PROC_TASK]
        self.far = self.task.configure(schedule_in={"hours": 1})
        self.conn = psycopg.connect(self.conninfo, autocommit=True)

    def fill(self, count: int) -> None:
        for first in range(0, count, FILL_BATCH):
            last = min(first + FILL_BATCH, count)
            self.task.batch_defer(*({"index": i} for i in range(first, last)))

    def finished(self) -> tuple[int, int]:
        rows = self.conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs"
            " WHERE status IN ('succeeded', 'failed') GROUP BY status"
        ).fetchall()
        counts = dict(rows)
        return counts.get("succeeded", 0), counts.get("failed", 0)

    def schedule_far(self, index: int) -> None:
        self.far.defer(index=index)

    def schedule_at(self, index: int, due_s: float, kind: str) -> None:
        del kind
        self.task.configure(schedule_at=datetime.fromtimestamp(due_s, UTC)).defer(index=index)

    def node_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bench.pg_workers",
            "procrastinate",
            self.conninfo,
            "--concurrency",
            str(self.slots),
            "--poll",
            str(self.poll_s),
        ]

    def node_env(self, sink: Path) -> dict[str, str]:
        return clean_env(**{SINK_ENV: str(sink)})

    def close(self) -> None:
        self.conn.close()
        self.client.close()
        drop_schema(self.dsn, self.schema)


# The driver.


@dataclass(frozen=True, slots=True)
class Config:
    """One row of the comparison: a system, its node count, its poll, and what to measure."""

    system: str
    nodes: int
    poll_s: float | None = None
    phases: tuple[str, ...] = ("drain", "schedule", "lag")

    @property
    def key(self) -> str:
        poll = "" if self.poll_s is None else f" poll {self.poll_s:g}s"
        return f"{self.system} x{self.nodes}{poll}"


def configs_of(opts: Options) -> list[Config]:
    configs: list[Config] = []
    if "schedlog" in opts.systems:
        configs += [Config("schedlog", n) for n in opts.nodes]
    if "procrastinate" in opts.systems:
        configs += [Config("procrastinate", n, PROCRASTINATE_DEFAULT_POLL_S) for n in opts.nodes]
        configs += [Config("procrastinate", 1, p, ("schedule", "lag")) for p in opts.fast_polls]
    return configs


def open_system(config: Config, opts: Options) -> System:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    if config.system == "schedlog":
        return Schedlog(opts, schema)
    return Procrastinate(opts, schema, config.poll_s or PROCRASTINATE_DEFAULT_POLL_S)


def wait_for(
    what: str, done: Callable[[], bool], timeout_s: float, progress: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {timeout_s:.0f} s ({progress()})")
        time.sleep(POLL_S)


@dataclass(slots=True)
class Trial:
    """One configuration measured once: a fresh schema, its nodes, and the phases."""

    config: Config
    opts: Options
    run: int
    workdir: Path
    system: System = field(init=False)
    sink: PhaseSink = field(init=False)
    nodes: list[Node] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    succeeded: int = 0
    """Jobs that must have succeeded once the phases so far are over."""

    def measure(self) -> dict[str, Any]:
        config, opts = self.config, self.opts
        logs = self.workdir / f"run{self.run}-{config.system}-{config.nodes}-{config.poll_s}"
        logs.mkdir(parents=True)
        self.sink = PhaseSink(logs / "sink.txt")
        self.result = {"config": config.key, "run": self.run, **asdict(config), "lag": {}}
        self.system = open_system(config, opts)
        try:
            if "drain" in config.phases:
                started = time.perf_counter()
                self.system.fill(opts.jobs)
                self.result["fill_jobs_per_s"] = opts.jobs / (time.perf_counter() - started)
            env = self.system.node_env(self.sink.path)
            spawned = time.time()
            statuses: list[int] = []
            self.result["node_exit_status"] = statuses
            with node_group(self.system, env, config.nodes, logs, statuses) as self.nodes:
                self.result["nodes_ready_s"] = time.time() - spawned
                self.result["pids"] = [n.pid for n in self.nodes]
                if "drain" in config.phases:
                    self.drain(spawned)
                if "schedule" in config.phases:
                    self.schedule()
                if "lag" in config.phases:
                    for number, kind in enumerate(self.system.lag_kinds):
                        self.lag(kind, LAG_BASE * (number + 1))
        finally:
            self.system.close()
        if any(statuses):
            raise RuntimeError(f"nodes exited with {statuses} after SIGTERM; see {logs}")
        return self.result

    def pids(self) -> list[int]:
        return [n.pid for n in self.nodes]

    def settle(self, what: str, also_succeeded: int) -> None:
        """Wait until the phase's jobs have all succeeded (none may fail)."""
        self.succeeded += also_succeeded
        system, expected = self.system, self.succeeded

        def finished() -> bool:
            succeeded, failed = system.finished()
            if failed:
                raise RuntimeError(f"{what}: {failed} jobs failed; see the node logs")
            return succeeded >= expected

        wait_for(
            what,
            finished,
            timeout_s=max(300.0, also_succeeded / 20),
            progress=lambda: f"{system.finished()[0]} of {expected} succeeded",
        )

    def drain(self, spawned: float) -> None:
        """Wait until every drain job succeeded; the rate counts from the first start."""
        jobs = self.opts.jobs
        cpu_before = CpuSnapshot.take(self.pids())
        self.settle("drain", jobs)
        done = time.time()
        cpu = CpuSnapshot.take(self.pids()).cores_since(cpu_before)
        self.sink.refresh()
        starts = [self.sink.first[i][0] for i in range(jobs) if i in self.sink.first]
        if len(starts) < jobs:
            raise RuntimeError(f"drain: only {len(starts)} of {jobs} jobs left a sink line")
        first = min(starts)
        per_pid = self.sink.per_pid(0, jobs)
        self.result.update(
            drain_jobs_per_s=jobs / (done - first),
            drain_s=done - first,
            drain_wall_s=done - spawned,
            drain_share=[per_pid.get(pid, 0) for pid in self.pids()],
            drain_duplicates=sum(per_pid.values()) - jobs,
            drain_cpu_cores=cpu,
        )

    def schedule(self) -> None:
        """One-at-a-time calls from this process, due in an hour (they never run)."""
        started = time.perf_counter()
        for k in range(self.opts.schedule_jobs):
            self.system.schedule_far(FAR_BASE + k)
        elapsed = time.perf_counter() - started
        self.result["schedule_jobs_per_s"] = self.opts.schedule_jobs / elapsed

    def lag(self, kind: str, base: int) -> None:
        """Jobs due at random over the spread, every call made before the first is due."""
        count, sink = self.opts.lag_jobs, self.sink
        rng = random.Random(f"{self.opts.seed} {self.run} {kind}")  # noqa: S311 - not crypto
        rate = self.result.get("schedule_jobs_per_s", 200.0)
        lead_s = max(1.0, 1.5 * count / rate + 0.5)  # the calls at the measured rate, and more
        begin = time.time()
        dues = [begin + lead_s + rng.uniform(0, self.opts.lag_spread_s) for _ in range(count)]
        late = 0
        for k, due in enumerate(dues):
            self.system.schedule_at(base + k, due, kind)
            late += time.time() > due

        def all_started() -> bool:
            sink.refresh()
            return sink.count_in(base, base + count) >= count

        wait_for(
            f"lag ({kind})",
            all_started,
            timeout_s=max(dues) - time.time() + 60,
            progress=lambda: f"{sink.count_in(base, base + count)} of {count} started",
        )
        self.settle(f"lag ({kind})", count)  # the next phase starts on idle nodes
        lags = sorted((sink.first[base + k][0] - due) * 1000 for k, due in enumerate(dues))
        per_pid = sink.per_pid(base, base + count)
        self.result["lag"][kind] = {
            "p50_ms": percentile(lags, 0.50),
            "p99_ms": percentile(lags, 0.99),
            "max_ms": lags[-1],
            "min_ms": lags[0],
            "mean_ms": statistics.fmean(lags),
            "lead_s": lead_s,
            "scheduled_late": late,
            "share": [per_pid.get(pid, 0) for pid in self.pids()],
            "duplicates": sum(per_pid.values()) - count,
        }


# Summary and report.

METRICS = ["fill_jobs_per_s", "drain_jobs_per_s", "schedule_jobs_per_s"]
LAG_METRICS = ["p50_ms", "p99_ms", "max_ms"]


def _stat(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def _shares_pct(shares: list[list[int]], nodes: int) -> list[float]:
    """Each node's share, summed over the runs (nodes are numbered in start order)."""
    total = sum(sum(s) for s in shares) or 1
    return [round(100 * sum(s[i] for s in shares) / total, 1) for i in range(nodes)]


def summarize(trials: list[dict[str, Any]], configs: list[Config]) -> list[dict[str, Any]]:
    rows = []
    for config in configs:
        mine = [t for t in trials if t["config"] == config.key]
        row: dict[str, Any] = {"config": config.key, **asdict(config), "runs": len(mine)}
        for metric in METRICS:
            values = [t[metric] for t in mine if metric in t]
            if values:
                row[metric] = _stat(values)
        shares = [t["drain_share"] for t in mine if "drain_share" in t]
        if shares:
            row["drain_share_pct"] = _shares_pct(shares, config.nodes)
            row["drain_duplicates"] = [t["drain_duplicates"] for t in mine]
        cpus = [t["drain_cpu_cores"] for t in mine if "drain_cpu_cores" in t]
        if cpus:
            row["drain_cpu_cores_median"] = {
                k: statistics.median(c[k] for c in cpus) for k in cpus[0]
            }
        row["lag"] = {}
        for kind in dict.fromkeys(k for t in mine for k in t["lag"]):
            runs = [t["lag"][kind] for t in mine if kind in t["lag"]]
            lag: dict[str, Any] = {m: _stat([r[m] for r in runs]) for m in LAG_METRICS}
            lag["share_pct"] = _shares_pct([r["share"] for r in runs], config.nodes)
            lag["scheduled_late"] = sum(r["scheduled_late"] for r in runs)
            lag["duplicates"] = sum(r["duplicates"] for r in runs)
            row["lag"][kind] = lag
        rows.append(row)
    return rows


def _find(rows: list[dict[str, Any]], system: str, nodes: int) -> dict[str, Any] | None:
    """The row of `system` on `nodes` (Procrastinate: at its default poll)."""
    for row in rows:
        if row["system"] == system and row["nodes"] == nodes:
            if system == "procrastinate" and row["poll_s"] != PROCRASTINATE_DEFAULT_POLL_S:
                continue
            return row
    return None


def _median(rows: list[dict[str, Any]], system: str, nodes: int, metric: str) -> float | None:
    row = _find(rows, system, nodes)
    if row is None or metric not in row:
        return None
    return float(row[metric]["median"])


def _lag_median(
    rows: list[dict[str, Any]], system: str, nodes: int, kind: str, metric: str
) -> float | None:
    row = _find(rows, system, nodes)
    if row is None or kind not in row["lag"]:
        return None
    return float(row["lag"][kind][metric]["median"])


def targets(rows: list[dict[str, Any]], opts: Options) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    base_nodes = min(opts.nodes)
    ours = _median(rows, "schedlog", base_nodes, "drain_jobs_per_s")
    theirs = _median(rows, "procrastinate", base_nodes, "drain_jobs_per_s")
    if ours is not None and theirs is not None:
        ratio = ours / theirs
        results.append(
            {
                "target": f"drain >= {TARGET_DRAIN_RATIO:g}x Procrastinate ({base_nodes} node)",
                "value": f"{ratio:.2f}x ({ours:.0f} vs {theirs:.0f} jobs/s)",
                "pass": ratio >= TARGET_DRAIN_RATIO,
            }
        )
    if "schedlog" in opts.systems:
        for kind in opts.lag_kinds:
            p99s = {n: _lag_median(rows, "schedlog", n, kind, "p99_ms") for n in opts.nodes}
            known = [v for v in p99s.values() if v is not None]
            if known:
                results.append(
                    {
                        "target": f"lag p99 < {TARGET_P99_MS:g} ms, {kind}s (every node count)",
                        "value": ", ".join(
                            f"x{n}: {v:,.1f} ms" for n, v in p99s.items() if v is not None
                        ),
                        "pass": max(known) < TARGET_P99_MS,
                    }
                )
    one = _median(rows, "schedlog", 1, "drain_jobs_per_s")
    two = _median(rows, "schedlog", 2, "drain_jobs_per_s")
    if one is not None and two is not None:
        results.append(
            {
                "target": "drain with 2 nodes > 1 node",
                "value": f"{two:.0f} vs {one:.0f} jobs/s ({two / one:.2f}x)",
                "pass": two > one,
            }
        )
    return results


def machine_info(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    changed = subprocess.run(  # others' work in progress is part of what runs
        ["git", "-C", str(ROOT), "status", "--porcelain"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    dirty = [line[3:] for line in changed if not line[3:].startswith("bench/")]
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "postgresql": row[0] if row else "?",
        "schedlog_commit": rev + (f" + {len(dirty)} uncommitted paths" if dirty else ""),
        "uncommitted": dirty,
        "procrastinate": importlib.metadata.version("procrastinate"),
        "psycopg": importlib.metadata.version("psycopg"),
        "loadavg_at_start": os.getloadavg(),
    }


def _fmt(stat: dict[str, Any], fmt: str) -> str:
    if len(stat["values"]) == 1:
        return fmt.format(stat["median"])
    return f"{fmt.format(stat['median'])} ({fmt.format(stat['min'])}-{fmt.format(stat['max'])})"


def _cell(row: dict[str, Any], metric: str, fmt: str = "{:,.0f}") -> str:
    return _fmt(row[metric], fmt) if metric in row else "-"


def _poll(row: dict[str, Any]) -> str:
    return "LISTEN" if row["poll_s"] is None else f"poll {row['poll_s']:g} s"


def throughput_table(rows: list[dict[str, Any]], opts: Options) -> Table:
    table = Table(
        title=f"throughput: medians of {opts.runs} run(s) (min-max), {opts.slots} slots per node",
        title_justify="left",
    )
    for name in ("system", "nodes", "wakeup", "fill jobs/s", "drain jobs/s", "schedule jobs/s"):
        table.add_column(name, justify="left" if name in {"system", "wakeup"} else "right")
    table.add_column("drain share % per node (+ repeats)", justify="right")
    table.add_column("drain CPU cores: nodes/pg/machine", justify="right")
    for row in rows:
        share = "/".join(f"{v:g}" for v in row.get("drain_share_pct", [])) or "-"
        dups = sum(row.get("drain_duplicates", []))
        if dups:
            share += f" (+{dups})"
        cpu = row.get("drain_cpu_cores_median")
        cpu_text = f"{cpu['nodes']:.2f}/{cpu['postgres']:.2f}/{cpu['machine']:.2f}" if cpu else "-"
        table.add_row(
            row["system"],
            str(row["nodes"]),
            _poll(row),
            _cell(row, "fill_jobs_per_s"),
            _cell(row, "drain_jobs_per_s"),
            _cell(row, "schedule_jobs_per_s"),
            share,
            cpu_text,
        )
    return table


def lag_table(rows: list[dict[str, Any]], opts: Options) -> Table:
    table = Table(
        title=f"start lag of {opts.lag_jobs:,} jobs due at random over {opts.lag_spread_s:g} s: "
        f"medians of {opts.runs} run(s) (min-max)",
        title_justify="left",
    )
    for name in ("system", "nodes", "wakeup", "jobs"):
        table.add_column(name, justify="left" if name != "nodes" else "right")
    for name in ("p50 ms", "p99 ms", "max ms", "share % per node (+ repeats)"):
        table.add_column(name, justify="right")
    for row in rows:
        for kind, lag in row["lag"].items():
            share = "/".join(f"{v:g}" for v in lag["share_pct"])
            if lag["duplicates"]:
                share += f" (+{lag['duplicates']})"
            table.add_row(
                row["system"],
                str(row["nodes"]),
                _poll(row),
                f"{kind}s",
                _fmt(lag["p50_ms"], "{:,.1f}"),
                _fmt(lag["p99_ms"], "{:,.1f}"),
                _fmt(lag["max_ms"], "{:,.1f}"),
                share,
            )
    return table


def _ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return "-"
    ratio = ours / theirs
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:,.0f}x"


def ratios_table(rows: list[dict[str, Any]], opts: Options) -> Table:
    table = Table(
        title="schedlog / Procrastinate (poll 5 s), same node count",
        caption="medians; lag: Procrastinate's p99 / schedlog's p99",
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("nodes", justify="right")
    table.add_column("drain", justify="right")
    table.add_column("schedule", justify="right")
    for kind in opts.lag_kinds:
        table.add_column(f"lag p99 ({kind}s)", justify="right")
    for n in opts.nodes:
        cells = [str(n)]
        for metric in ("drain_jobs_per_s", "schedule_jobs_per_s"):
            ours = _median(rows, "schedlog", n, metric)
            cells.append(_ratio(ours, _median(rows, "procrastinate", n, metric)))
        theirs = _lag_median(rows, "procrastinate", n, "task", "p99_ms")
        for kind in opts.lag_kinds:
            ours = _lag_median(rows, "schedlog", n, kind, "p99_ms")
            cells.append(_ratio(theirs, ours) if ours is not None and ours > 0 else "-")
        table.add_row(*cells)
    return table


def render(
    console: Console, rows: list[dict[str, Any]], goals: list[dict[str, Any]], opts: Options
) -> None:
    console.print(throughput_table(rows, opts))
    console.print(lag_table(rows, opts))
    if set(opts.systems) == {"schedlog", "procrastinate"}:
        console.print(ratios_table(rows, opts))
    for goal in goals:
        verdict = "[green]PASS[/]" if goal["pass"] else "[red]MISS[/]"
        console.print(f"{verdict}  {goal['target']}: {goal['value']}")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The fill schedules 1,000 jobs per commit, the limit (S10), on purpose: not worth a warning.
    logging.getLogger("schedlog.scheduler").setLevel(logging.ERROR)
    console = Console(width=None if sys.stdout.isatty() else 200, highlight=False)
    machine = machine_info(opts.dsn)
    command = shlex.join([sys.executable, *sys.argv])
    console.print(f"command: {command}")
    console.print(
        f"machine: {machine['nproc']} cores, Python {machine['python']}, "
        f"PostgreSQL {machine['postgresql']}, schedlog {machine['schedlog_commit']}, "
        f"procrastinate {machine['procrastinate']}, psycopg {machine['psycopg']}, "
        f"load average {' '.join(f'{v:.2f}' for v in machine['loadavg_at_start'])}"
    )
    if machine["uncommitted"]:
        console.print(f"uncommitted in the work tree: {' '.join(machine['uncommitted'])}")
    console.print(
        f"drain: {opts.jobs:,} trivial mutations (schedlog; filled by app.run_mutation, "
        f"{FILL_BATCH:,} per commit) / async tasks (Procrastinate; batch_defer), due now, in the "
        f"store before the nodes start; schedule: {opts.schedule_jobs:,} one-at-a-time calls "
        f"(schedlog: {opts.lag_kinds[0]}s); lag: {opts.lag_jobs:,} jobs due at random over "
        f"{opts.lag_spread_s:g} s, schedlog: {' then '.join(k + 's' for k in opts.lag_kinds)} on "
        "the same nodes"
    )
    configs = configs_of(opts)
    trials: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pg_bench-") as tmp:
        for run in range(1, opts.runs + 1):
            for config in configs:
                try:
                    trial = Trial(config, opts, run, Path(tmp)).measure()
                except Exception:
                    console.print(f"[red]{config.key} run {run} failed; node logs:[/]")
                    for log in sorted(Path(tmp).glob("**/node-*.log")):
                        text = log.read_text(errors="replace")[-3000:]
                        if text.strip():
                            console.print(f"--- {log}\n{text}", markup=False)
                    raise
                trials.append(trial)
                console.print(_progress(trial), markup=False)
    rows = summarize(trials, configs)
    goals = targets(rows, opts)
    render(console, rows, goals, opts)
    machine["loadavg_at_end"] = os.getloadavg()
    console.print(
        "load average at the end: " + " ".join(f"{v:.2f}" for v in machine["loadavg_at_end"])
    )
    if opts.json_path is not None:
        document = {
            "command": command,
            "machine": machine,
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
            "trials": trials,
            "summary": rows,
            "targets": goals,
        }
        opts.json_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
        console.print(f"figures written to {opts.json_path}")
    return 0


def _progress(trial: dict[str, Any]) -> str:
    parts = [f"run {trial['run']} {trial['config']}:"]
    if "drain_jobs_per_s" in trial:
        parts.append(
            f"drain {trial['drain_jobs_per_s']:,.0f} jobs/s ({trial['drain_s']:.1f} s, "
            f"share {trial['drain_share']}, dup {trial['drain_duplicates']}, "
            f"cpu {trial['drain_cpu_cores']});"
        )
    if "schedule_jobs_per_s" in trial:
        parts.append(f"schedule {trial['schedule_jobs_per_s']:,.0f}/s;")
    for kind, lag in trial["lag"].items():
        parts.append(
            f"lag {kind}s p50 {lag['p50_ms']:,.1f} p99 {lag['p99_ms']:,.1f} "
            f"max {lag['max_ms']:,.1f} ms (lead {lag['lead_s']:.1f} s, "
            f"late {lag['scheduled_late']}, share {lag['share']});"
        )
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
