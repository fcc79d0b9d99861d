"""Audit benchmark (issue 4): fill a store with many jobs, then time replay and the read side.

Fills a SQLite store with `--jobs` jobs in a realistic mix (about 60 % success, 10 % failed,
10 % canceled, 20 % pending; some retried; some scheduled by another job), saving many
aggregates per transaction, then prints:

- the fill rate (jobs/s and events/s);
- the replay rate: `app.replay()` (rebuild of the live view) and `app.replay(as_of=...)`;
- the median, p99 and max latency of `get`, filtered `query` pages (with a cursor follow),
  `stats`, `history` and `children`, over `--samples` random samples each.

Targets (issue 4): replay >= 100,000 events/s; every query < 10 ms at p99.

    .venv/bin/python bench/audit_bench.py                      # 1,000,000 jobs, temp store
    .venv/bin/python bench/audit_bench.py --jobs 100000 --samples 500
    .venv/bin/python bench/audit_bench.py --reuse --path /tmp/b.db   # fill once, rerun fast

The runtime is never started: the clock is a FakeClock and the jobs' events are built by the
aggregate's own commands, so the log and the view are what a real run would have written.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import heapq
import io
import itertools
import math
import os
import platform
import random
import shlex
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schedlog import App
from schedlog.events import FunctionKind, Outcome, ScheduledFunction
from schedlog.projections.schema import LINKS, TABLE
from schedlog.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Callable

NOW_MS = 1_800_000_000_000
"""The FakeClock's time: every job was created in the SPAN_MS before it."""
SPAN_MS = 3 * 24 * 60 * 60 * 1000
"""Jobs are created over three days (inside the default 7-day retention: none is pruned)."""
HOUR_MS = 60 * 60 * 1000
NAMES = [
    f"{module}:{fn}"
    for module in ("emails", "billing", "reports", "sync", "webhooks")
    for fn in ("send", "retry", "cleanup", "notify")
]
NODES = [f"node-{i}" for i in range(4)]
QUERY_LIMIT = 50
WINDOW_MS = 6 * HOUR_MS
TARGET_REPLAY = 100_000
TARGET_P99_MS = 10.0
BUDGET_S = 60
"""A slow call is sampled for this long at most (the table shows how many samples ran)."""


# Filling.

Step = tuple[int, "Callable[[ScheduledFunction], None]"]
"""Something that happens to a job at a time (ms): start, retry, complete or cancel it."""


@dataclass(slots=True)
class FillStats:
    jobs: int = 0
    events: int = 0
    saves: int = 0
    seconds: float = 0.0


def created_at(i: int, n: int) -> int:
    return NOW_MS - SPAN_MS + (SPAN_MS * i) // n


def make_job(
    rng: random.Random, i: int, n: int, parents: list[str]
) -> tuple[ScheduledFunction, list[Step]]:
    """Build job `i` of `n`, and what will happen to it, in time order, up to NOW_MS.

    About 60 % succeed, 10 % fail, 10 % are canceled and 20 % are still pending; 30 % are
    actions (started, then completed by a later save), the rest mutations (started and
    completed in one save); 5 % of the mutations are retried once; 10 % have a parent.
    """
    created = created_at(i, n)
    kind = FunctionKind.ACTION if rng.random() < 0.3 else FunctionKind.MUTATION
    parent = rng.choice(parents) if parents and rng.random() < 0.1 else None
    roll = rng.random()
    if roll < 0.2:  # pending: mostly due in the future, a few overdue
        scheduled = NOW_MS + rng.randrange(1, 24 * HOUR_MS) if roll < 0.19 else created
    else:
        scheduled = created + (0 if rng.random() < 0.2 else rng.randrange(0, HOUR_MS))
    job = ScheduledFunction.schedule(
        name=rng.choice(NAMES),
        kind=kind,
        args=[{"user": rng.randrange(1_000_000), "note": "x" * rng.randrange(0, 64)}],
        kwargs={} if rng.random() < 0.8 else {"priority": rng.randrange(3)},
        scheduled_time_ms=scheduled,
        creation_time_ms=created,
        parent_id=parent,
    )
    if roll < 0.2:
        return job, []
    at = scheduled + rng.randrange(0, 50)
    node = rng.choice(NODES)
    lease = at + 30_000 if kind is FunctionKind.ACTION else None
    steps: list[Step]
    if roll < 0.3:  # canceled: most while pending, some actions while running
        if roll < 0.28 or kind is FunctionKind.MUTATION:
            steps = [(at, lambda j: j.cancel(at))]
        else:
            steps = [
                (at, lambda j: j.start(node, at, lease)),
                (at + 5, lambda j: j.cancel(at + 5)),
                (at + 20, lambda j: j.complete(Outcome.SUCCESS, at + 20)),
            ]
        return job, [s for s in steps if s[0] <= NOW_MS]
    steps = []
    if kind is FunctionKind.MUTATION and rng.random() < 0.05:  # a transient error, retried
        steps.append(
            (
                at,
                lambda j: j.retry(at_ms=at, error="OperationalError: locked", next_run_ms=at + 100),
            )
        )
        at += 100
    done = at + rng.randrange(1, 500)
    failed = roll < 0.4
    outcome = Outcome.FAILED if failed else Outcome.SUCCESS
    error = "ValueError: bad input" if failed else None

    def start(j: ScheduledFunction) -> None:
        j.start(node, at, lease)

    def complete(j: ScheduledFunction) -> None:
        j.complete(outcome, done, error)

    def run(j: ScheduledFunction) -> None:
        start(j)
        complete(j)

    if kind is FunctionKind.MUTATION:  # a mutation's start is saved with its outcome
        steps.append((done, run))
    else:
        steps += [(at, start), (done, complete)]
    return job, [s for s in steps if s[0] <= NOW_MS]


def fill(app: App, n: int, batch: int, seed: int) -> FillStats:
    """Write the jobs' events in time order, as one node would have, `batch` jobs per save.

    A job's later events land in later saves (an hour later at most), so the log interleaves
    jobs as a real one does; each save is one transaction, the view written inline with it.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not security
    stats = FillStats()
    parents: list[str] = []
    heap: list[tuple[int, int, ScheduledFunction, list[Step], int]] = []
    touched: dict[object, ScheduledFunction] = {}
    tiebreak = itertools.count()
    report_every = max(n // 10, 1)
    t0 = time.perf_counter()

    def save() -> None:
        stats.events += sum(len(j.pending_events) for j in touched.values())
        app.store.save(*touched.values())
        stats.saves += 1
        touched.clear()

    while stats.jobs < n or heap:
        if stats.jobs < n and (not heap or created_at(stats.jobs, n) <= heap[0][0]):
            job, steps = make_job(rng, stats.jobs, n, parents)
            stats.jobs += 1
            if steps:
                heapq.heappush(heap, (steps[0][0], next(tiebreak), job, steps, 0))
            if stats.jobs % 97 == 0:
                parents.append(job.job_id)
                del parents[:-10_000]
            if stats.jobs % report_every == 0:
                rate = stats.jobs / (time.perf_counter() - t0)
                print(f"  created {stats.jobs:>10,} jobs  ({rate:,.0f} jobs/s)", file=sys.stderr)
        else:
            _, _, job, steps, k = heapq.heappop(heap)
            steps[k][1](job)
            if k + 1 < len(steps):
                heapq.heappush(heap, (steps[k + 1][0], next(tiebreak), job, steps, k + 1))
        touched[job.id] = job
        if len(touched) >= batch:
            save()
    if touched:
        save()
    stats.seconds = time.perf_counter() - t0
    return stats


# Sampling inputs from the store itself (so --reuse works the same).


@dataclass(slots=True)
class Inputs:
    ids: list[str]
    parents: list[str]
    names: list[str]
    min_time: int
    max_time: int


def sql(path: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def inputs_of(path: Path, samples: int) -> Inputs:
    ids = [r[0] for r in sql(path, f"SELECT id FROM {TABLE} ORDER BY random() LIMIT ?", (samples,))]  # noqa: S608
    parents = [
        r[0]
        for r in sql(
            path,
            f"SELECT parent_id FROM (SELECT DISTINCT parent_id FROM {LINKS}) "  # noqa: S608
            "ORDER BY random() LIMIT ?",
            (samples,),
        )
    ]
    names = [r[0] for r in sql(path, f"SELECT DISTINCT name FROM {TABLE}")]  # noqa: S608
    lo, hi = sql(path, f"SELECT MIN(scheduled_time), MAX(scheduled_time) FROM {TABLE}")[0]  # noqa: S608
    return Inputs(ids, parents, names, lo, hi)


# Timing.


@dataclass(frozen=True, slots=True)
class Latency:
    label: str
    samples: int
    median_ms: float
    p99_ms: float
    max_ms: float
    note: str = ""


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    k = min(max(math.ceil(q * len(sorted_values)) - 1, 0), len(sorted_values) - 1)
    return sorted_values[k]


def measure(
    label: str, call: Callable[..., object], inputs: list[tuple[Any, ...]], note: str = ""
) -> Latency:
    """Time `call(*args)` once for each `args` of `inputs` (for BUDGET_S at most)."""
    times: list[float] = []
    gc.collect()
    stop = time.perf_counter_ns() + BUDGET_S * 1_000_000_000
    for args in inputs:
        t0 = time.perf_counter_ns()
        call(*args)
        t1 = time.perf_counter_ns()
        times.append((t1 - t0) / 1e6)
        if t1 > stop:
            break
    times.sort()
    return Latency(
        label, len(times), percentile(times, 0.5), percentile(times, 0.99), times[-1], note
    )


def latencies(app: App, inp: Inputs, samples: int, seed: int) -> list[Latency]:
    rng = random.Random(seed + 1)  # noqa: S311 - reproducible sampling, not security
    sf = app.scheduled_functions
    ids = [(inp.ids[k % len(inp.ids)],) for k in range(samples)]
    parents = inp.parents or inp.ids
    children = [(parents[k % len(parents)],) for k in range(samples)]
    afters = [(rng.randrange(inp.min_time, inp.max_time),) for _ in range(samples)]
    windows = []
    for _ in range(samples):
        after = rng.randrange(inp.min_time, max(inp.max_time - WINDOW_MS, inp.min_time + 1))
        windows.append((rng.choice(inp.names), after, after + WINDOW_MS))
    follows = [
        (
            n,
            a,
            b,
            sf.query(name=n, scheduled_after_ms=a, scheduled_before_ms=b, limit=QUERY_LIMIT).cursor,
        )
        for n, a, b in windows
    ]
    nothing: list[tuple[Any, ...]] = [()] * samples

    def by_state(state: str, after: int | None = None, order: str = "asc") -> object:
        return sf.query(state=state, scheduled_after_ms=after, order=order, limit=QUERY_LIMIT)

    def by_name(name: str, after: int, before: int, cursor: str | None = None) -> object:
        return sf.query(
            name=name,
            scheduled_after_ms=after,
            scheduled_before_ms=before,
            limit=QUERY_LIMIT,
            cursor=cursor,
        )

    return [
        measure("get(id)", sf.get, ids, "random id"),
        measure("query(state=failed)", by_state, [("failed",)] * samples, "first page"),
        measure("query(state=failed, after=t)", by_state, [("failed", *a) for a in afters]),
        measure("query(state=pending, desc)", by_state, [("pending", None, "desc")] * samples),
        measure("query(name, [t, t+6h))", by_name, windows, "random name and t"),
        measure("query(name, [t, t+6h), cursor)", by_name, follows, "the page after the first"),
        measure("stats()", app.stats, nothing),
        measure("history(id)", app.history, ids, "random id"),
        measure("children(parent)", app.children, children, "random parent"),
    ]


# Reporting.


def fmt_rate(n: float) -> str:
    return f"{n:,.0f}"


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    print(line)
    for r in rows:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs to fill (1,000,000)")
    parser.add_argument("--path", type=Path, help="store file (default: a temp file)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the store, and skip the fill if it holds jobs "
        "(default --path: /tmp/schedlog-bench-JOBS.db)",
    )
    parser.add_argument("--samples", type=int, default=1000, help="samples per latency (1000)")
    parser.add_argument("--batch", type=int, default=1000, help="aggregates per save (1000)")
    parser.add_argument("--seed", type=int, default=4, help="random seed (4)")
    parser.add_argument("--skip-replay", action="store_true", help="time the queries only")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.samples < 1 or args.batch < 1:
        parser.error("--jobs, --samples and --batch must be >= 1")
    if args.path is not None and args.path.exists() and not args.reuse:
        parser.error(f"{args.path} exists: pass --reuse to use it, or another --path")
    return args


def ensure_filled(app: App, args: argparse.Namespace) -> None:
    existing = app.scheduled_functions.stats(NOW_MS).counts
    have = sum(existing.values())
    if have:
        print(f"fill    : reused, {have:,} jobs in the view {existing}")
        if have != args.jobs:
            print(f"          (note: --jobs {args.jobs:,} asked; timing the {have:,} present)")
        return
    print(f"fill    : {args.jobs:,} jobs, {args.batch} aggregates per transaction ...")
    f = fill(app, args.jobs, args.batch, args.seed)
    print(
        f"fill    : {f.jobs:,} jobs, {f.events:,} events, {f.saves:,} saves in {f.seconds:.1f} s"
        f" = {fmt_rate(f.jobs / f.seconds)} jobs/s, {fmt_rate(f.events / f.seconds)} events/s"
    )
    print(f"          states: {app.scheduled_functions.stats(NOW_MS).counts}")


def replays(app: App, log_rows: int) -> list[list[str]]:
    def row(label: str, events: int, secs: float) -> list[str]:
        rate = events / secs
        ok = "ok" if rate >= TARGET_REPLAY else "BELOW"
        return [label, f"{events:,}", f"{secs:.2f}", fmt_rate(rate), ok]

    gc.collect()
    t0 = time.perf_counter()
    applied = app.replay()
    rows = [row("replay() (rebuild live view)", applied, time.perf_counter() - t0)]
    gc.collect()
    t0 = time.perf_counter()
    view = app.replay(as_of=NOW_MS - SPAN_MS // 2)
    secs = time.perf_counter() - t0
    try:
        applied = view.events_applied
    finally:
        view.close()
    rows.append(row("replay(as_of=now-36h) (reads all)", log_rows, secs))
    rows.append(["  of which applied (<= as_of)", f"{applied:,}", "", "", ""])
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # the lines in order with stderr progress
    with contextlib.ExitStack() as stack:
        if args.path is not None:
            path: Path = args.path.resolve()
        elif args.reuse:
            path = Path(tempfile.gettempdir()) / f"schedlog-bench-{args.jobs}.db"
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="schedlog-bench-"))
            path = Path(tmp) / "bench.db"
        print(f"command : {shlex.join([Path(sys.executable).name, *sys.argv])}")
        print(
            f"machine : {platform.machine()}, {os.cpu_count()} cpus, "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
        )
        print(f"store   : {path}")
        app = App(store=f"sqlite:///{path}", clock=FakeClock(NOW_MS))
        stack.callback(app.close)
        ensure_filled(app, args)
        log_rows = app.store.recorder.max_notification_id() or 0
        size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        print(f"log     : {log_rows:,} events; file {size / 2**20:,.0f} MiB (with -wal)")
        results = latencies(app, inputs_of(path, args.samples), args.samples, args.seed)
        replay_rows = [] if args.skip_replay else replays(app, log_rows)

    print()
    if replay_rows:
        print(f"Replay (target >= {TARGET_REPLAY:,} events/s)")
        print_table(replay_rows, ["", "events", "seconds", "events/s", "target"])
        print()
    print(f"Read latency, ms, over n random samples (target p99 < {TARGET_P99_MS:g} ms)")
    print_table(
        [
            [
                r.label,
                str(r.samples),
                f"{r.median_ms:.3f}",
                f"{r.p99_ms:.3f}",
                f"{r.max_ms:.3f}",
                "ok" if r.p99_ms < TARGET_P99_MS else "SLOW",
                r.note,
            ]
            for r in results
        ],
        ["call", "n", "median", "p99", "max", "target", "note"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
