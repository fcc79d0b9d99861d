"""Where an action's start lag goes: W3's shape, with a timeline of each job's steps (issue 6).

W3 (`bench/run-suite --only W3`) gives the start lag; this shows what makes its tail. It runs
the runtime in this process on a fresh SQLite store, schedules N jobs due at random over a few
seconds (in due order, from 1 s ahead; from this process, or with `--other` from a child
process, as W3's two modes do), and stamps each job's steps, relative to its due time:

- `dispatch`: the timer hands it to an executor (`LEAD_MS` ahead, or later if none is idle);
- `claim`: an action's `Started` saved (its commit, queued behind the commit in flight);
- `look`: a claimed action's read for a late cancel, `CHECK_AHEAD_MS` before it is due;
- `wake`: from the latest of the due time, the claim's end and the look's end to the
  function's start (the thread's wake-up, the GIL);
- `returned`: the runner hands the job back (its outcome's commit then runs on a commit thread).

It prints the lag's percentiles, each step's duration (p50 / p90 / p99 / max), and the
timelines of the latest jobs. A step that ends after the due time is in the lag.

    .venv/bin/python bench/lag_trace.py                      # 1,000 actions, worker in-process
    .venv/bin/python bench/lag_trace.py --other --show 5     # scheduled by another process
    .venv/bin/python bench/lag_trace.py --mutations          # mutations (no claim, no look)
    .venv/bin/python bench/lag_trace.py --store /tmp/schedlog-suite-1000000.db   # on a backlog
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schedlog import App  # noqa: E402
from schedlog.actors import runner, timer  # noqa: E402

ACTION, MUTATION = "trace:action", "trace:mutation"
Stamps = dict[str, dict[str, float]]


def _now_ms() -> float:
    return time.time() * 1000


def _app(store: str, started: dict[str, float] | None = None) -> App:
    app = App(store=store, max_concurrency=4)

    @app.action(name=ACTION)
    def action(ctx: Any, index: int) -> None:
        del index
        if started is not None:
            started[ctx.job_id] = _now_ms()

    @app.mutation(name=MUTATION)
    def mutation(ctx: Any, index: int) -> None:
        del index
        if started is not None:
            started.setdefault(ctx.job_id, _now_ms())  # its first attempt's start

    return app


def _stamp(stamps: Stamps) -> None:
    """Wrap the runner's and the timer's steps so that each stamps its job's timeline."""

    def around(cls: Any, name: str, begin: str | None, end: str, job_of: Any) -> None:
        original = getattr(cls, name)

        def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
            job_id = job_of(self, *args)
            if begin is not None:
                stamps[job_id][begin] = _now_ms()
            result = original(self, *args, **kwargs)
            stamps[job_id][end] = _now_ms()
            return result

        setattr(cls, name, wrapped)

    around(runner.JobRunner, "_claim", "claim0", "claim1", lambda _, job: job.job_id)
    around(runner.JobRunner, "_canceled_before_start", "look0", "look1", lambda _, job: job.job_id)
    around(runner.JobRunner, "run", "received", "returned", lambda _, job_id, *__: job_id)
    dispatch = timer.TimerActor._dispatch  # noqa: SLF001

    def dispatched(self: Any, now: int) -> None:
        before, at = set(self._running), _now_ms()
        dispatch(self, now)
        for job_id in set(self._running) - before:
            stamps[job_id]["dispatch"] = at

    timer.TimerActor._dispatch = dispatched  # type: ignore[method-assign] # noqa: SLF001


def _child(plan_path: str) -> None:
    """Schedule the plan's jobs from this (child) process; print `index,job_id` lines."""
    plan = json.loads(Path(plan_path).read_text())
    app = _app(plan["store"])
    try:
        for k, offset in enumerate(plan["offsets"]):
            job_id = app.scheduler.run_at(plan["base"] + offset, plan["fn"], k)
            print(f"{k},{job_id}")
    finally:
        app.close()


def _percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)

    def q(p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))]

    return f"p50 {q(0.5):6.2f}  p90 {q(0.9):6.2f}  p99 {q(0.99):6.2f}  max {values[-1]:6.2f} ms"


def _schedule(args: argparse.Namespace, app: App, store: str, directory: Path) -> dict[str, int]:
    """Schedule the jobs in due order from 1 s ahead; return each one's due time by id."""
    fn = MUTATION if args.mutations else ACTION
    rng = random.Random(args.seed)  # noqa: S311 - a workload, not a secret
    offsets = sorted(rng.randrange(int(args.spread_s * 1000)) for _ in range(args.jobs))
    base = int(_now_ms()) + 1000
    if not args.other:
        return {app.scheduler.run_at(base + o, fn, k): base + o for k, o in enumerate(offsets)}
    plan = directory / "plan.json"
    plan.write_text(json.dumps({"store": store, "base": base, "offsets": offsets, "fn": fn}))
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(plan)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    due = {}
    for line in out.split():
        k, job_id = line.split(",")
        due[job_id] = base + offsets[int(k)]
    return due


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--spread-s", type=float, default=5.0)
    parser.add_argument("--other", action="store_true", help="schedule from another process")
    parser.add_argument("--mutations", action="store_true", help="trace mutations, not actions")
    parser.add_argument("--show", type=int, default=10, help="timelines of the N latest jobs")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--store", type=Path, help="an existing SQLite file to run on (the suite's scale store)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    stamps: Stamps = collections.defaultdict(dict)
    _stamp(stamps)
    started: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite://{args.store or Path(tmp) / 'trace.db'}"
        app = _app(store, started)
        app.start()
        try:
            due = _schedule(args, app, store, Path(tmp))
            deadline = time.monotonic() + args.spread_s + 30
            while len(started) < len(due) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            app.close()
    lags = sorted((started[j] - due[j], j) for j in started if j in due)
    kind = "mutations" if args.mutations else "actions"
    mode = "scheduled by another process" if args.other else "scheduled in this process"
    print(f"{len(lags)} of {len(due)} {kind} started ({mode}); LEAD_MS {timer.LEAD_MS}, ", end="")
    print(f"CHECK_AHEAD_MS {runner.CHECK_AHEAD_MS}")
    print(f"{'start lag':18} {_percentiles([lag for lag, _ in lags])}")
    steps = {
        "dispatch (- due)": [s["dispatch"] - due[j] for j, s in stamps.items() if "dispatch" in s],
        "hand-over": [s["received"] - s["dispatch"] for s in stamps.values() if "received" in s],
        "claim": [s["claim1"] - s["claim0"] for s in stamps.values() if "claim1" in s],
        "look": [s["look1"] - s["look0"] for s in stamps.values() if "look1" in s],
        "wake": [
            started[j] - max(due[j], s.get("look1", 0.0), s.get("claim1", 0.0))
            for j, s in stamps.items()
            if j in started and j in due
        ],
    }
    for name, values in steps.items():
        print(f"{name:18} {_percentiles(values)}")
    if args.show:
        print(f"the {args.show} latest, each step's time relative to the due time (ms):")
    for lag, job_id in lags[-args.show :] if args.show else []:
        steps_at = {**stamps[job_id], "start": started[job_id]}
        line = {
            k: round(v - due[job_id], 2) for k, v in sorted(steps_at.items(), key=lambda kv: kv[1])
        }
        print(f"  lag {lag:6.2f}  {line}")


if __name__ == "__main__":
    main()
