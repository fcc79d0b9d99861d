"""Property: replay rebuilds exactly the live view, and as of t it is the live view at t (S27, S28).

Each example drives a fresh App on a SQLite file through a random sequence of operations:
scheduling (by `run_after`, or `run_at` with epoch ms or a datetime) of mutations that succeed
and schedule children, that raise, or that conflict on their first attempt (so `Retried`); of
actions that succeed or raise after scheduling children (S18); cancels of any job seen so far
(pending, finished, pruned or, racing the runtime, running); `cancel_all`; clock moves followed
by `wait_until_idle`, some longer than the retention so that finished jobs leave the view (S28);
`replay()` in the middle of the run (the live path must go on after the swap); and captures of
the live view. At the end:

1. `app.replay()` gives back exactly the documents and state counts it replaced;
2. for every capture at `t`, `app.replay(as_of=t)` gives exactly the documents captured then,
   and counts agreeing with them.

What "the live view at t" is: S27 applies every event whose time is at or before `t`, and
operations that follow a capture without moving the clock (a schedule, a cancel, a zero
advance) write events stamped exactly `t`. So the snapshot of a capture is taken at the last
moment the clock reads `t`: just before it next moves (or at the end), after `wait_until_idle`
so that all due work and the retention due at `t` are applied. A snapshot taken in the middle
of a millisecond is a state no instant-addressed view can name.

Two example tests below pin down what the property (retention 60 s, functions that take no
time) cannot reach: retention due at the very instant a job finishes while `wait_until_idle`
settles (retention_ms=0), and an instant inside a mutation that takes time (documented).
"""

from __future__ import annotations

import random
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pykka
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schedlog import App
from schedlog.testing import FakeClock
from tests.integration.helpers import Account

T0 = 1_800_000_000_000
RETENTION_MS = 60_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PAGE = 7  # small, so that pagination by cursor is exercised on both sides of every comparison

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow],
)

FUNCTIONS = ("spawn", "boom", "contend", "ok_action", "bad_action")
"""spawn: a mutation that schedules its children; boom: a mutation that stages children and
raises (S16); contend: a mutation that stages children and conflicts on its first attempt
(S15); ok_action: an action that schedules its children at once; bad_action: one that does so,
then raises (S18)."""


@dataclass(frozen=True)
class Snapshot:
    docs: list[dict[str, Any]]
    counts: dict[str, int]


# Operations, as plain tuples (readable in hypothesis' falsifying examples).
children = st.lists(  # lists, not tuples: arguments must be JSON (S9)
    st.tuples(st.sampled_from(FUNCTIONS), st.integers(min_value=0, max_value=5_000)).map(list),
    max_size=3,
)
schedule = st.tuples(
    st.just("schedule"),
    st.sampled_from(FUNCTIONS),
    st.integers(min_value=0, max_value=5_000),
    st.sampled_from(("after", "at_ms", "at_datetime")),
    children,
)
cancel = st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=1_000))
cancel_all = st.tuples(st.just("cancel_all"), st.sampled_from((*FUNCTIONS, None)))
advance = st.tuples(
    st.just("advance"),
    st.one_of(
        st.integers(min_value=0, max_value=20_000),
        st.integers(min_value=RETENTION_MS - 1_000, max_value=3 * RETENTION_MS),
    ),
)
capture = st.tuples(st.just("capture"))
replay = st.tuples(st.just("replay"))  # mid-run: the live path must go on after the swap
operations = st.lists(
    st.one_of(
        *[schedule] * 3, *[advance] * 3, cancel, capture, cancel_all, replay
    ),  # weights: mostly scheduling and running
    min_size=8,
    max_size=25,
)


def build(path: Path, clock: FakeClock) -> App:
    app = App(store=f"sqlite://{path}", clock=clock, max_concurrency=2, retention_ms=RETENTION_MS)
    app._runner._rng = random.Random(0)  # reproducible retry backoffs
    account = Account("contended")
    app.save(account)

    def spawn_children(ctx: Any, kids: list[list[Any]]) -> None:
        for name, delay in kids:
            ctx.scheduler.run_after(delay, f"prop:{name}", [])  # grandchildren: none

    @app.mutation(name="prop:spawn")
    def spawn(ctx: Any, kids: list[list[Any]]) -> None:
        spawn_children(ctx, kids)

    @app.mutation(name="prop:boom")
    def boom(ctx: Any, kids: list[list[Any]]) -> None:
        spawn_children(ctx, kids)
        msg = "boom"
        raise RuntimeError(msg)

    @app.mutation(name="prop:contend")
    def contend(ctx: Any, kids: list[list[Any]]) -> None:
        spawn_children(ctx, kids)
        acc = ctx.repository.get(account.id)
        acc.deposit(1)
        ctx.save(acc)
        if ctx.attempt == 1:  # another writer changes the account meanwhile: a conflict
            other = app.repository.get(account.id)
            other.deposit(1_000)
            app.save(other)

    @app.action(name="prop:ok_action")
    def ok_action(ctx: Any, kids: list[list[Any]]) -> None:
        spawn_children(ctx, kids)

    @app.action(name="prop:bad_action")
    def bad_action(ctx: Any, kids: list[list[Any]]) -> None:
        spawn_children(ctx, kids)
        msg = "bad action"
        raise ValueError(msg)

    return app


def documents(view: Any) -> list[dict[str, Any]]:
    page = view.query(limit=PAGE)
    docs = list(page.items)
    while page.cursor is not None:
        page = view.query(limit=PAGE, cursor=page.cursor)
        docs += page.items
    return docs


def snapshot(app: App) -> Snapshot:
    return Snapshot(documents(app.scheduled_functions), app.stats().counts)


def counted(docs: list[dict[str, Any]]) -> dict[str, int]:
    kinds = Counter(d["state"]["kind"] for d in docs)
    return {
        kind: kinds[kind] for kind in ("canceled", "failed", "inProgress", "pending", "success")
    }


class Driver:
    """Runs the operations against one App and keeps the captures."""

    def __init__(self, app: App, clock: FakeClock) -> None:
        self.app = app
        self.clock = clock
        self.known: list[str] = []  # every job id seen: scheduled here, or found in the view
        self.captures: dict[int, Snapshot | None] = {}

    def run(self, op: tuple[Any, ...]) -> None:
        match op:
            case ("schedule", fn, delay, via, kids):
                self.known.append(self.schedule(f"prop:{fn}", delay, via, kids))
            case ("cancel", index):
                if self.known:
                    self.app.scheduler.cancel(self.known[index % len(self.known)])
            case ("cancel_all", fn):
                self.app.scheduler.cancel_all(name=None if fn is None else f"prop:{fn}")
            case ("advance", ms):
                if ms > 0:
                    self.leaving_now()
                self.clock.advance(ms)
                self.app.wait_until_idle()
                self.learn()
            case ("capture",):
                self.app.wait_until_idle()
                self.captures[self.clock.now_ms()] = None  # taken when the clock moves on
            case ("replay",):
                self.app.wait_until_idle()
                before = snapshot(self.app)
                self.app.replay()
                assert snapshot(self.app) == before
            case _:
                raise AssertionError(op)

    def schedule(self, name: str, delay: int, via: str, kids: list[list[Any]]) -> str:
        if via == "after":
            return self.app.scheduler.run_after(delay, name, kids)
        if via == "at_ms":
            return self.app.scheduler.run_at(self.clock.now_ms() + delay, name, kids)
        when = EPOCH + timedelta(milliseconds=self.clock.now_ms() + delay)
        return self.app.scheduler.run_at(when, name, kids)

    def learn(self) -> None:
        seen = set(self.known)
        self.known += [
            d["_id"] for d in documents(self.app.scheduled_functions) if d["_id"] not in seen
        ]

    def leaving_now(self) -> None:
        """Take the snapshot of a capture at this instant: the last moment the clock reads it."""
        now = self.clock.now_ms()
        if now in self.captures:
            self.app.wait_until_idle()
            self.captures[now] = snapshot(self.app)


def note_coverage(app: App, driver: Driver, live: Snapshot) -> None:
    """Label the example (see `pytest --hypothesis-show-statistics`): what it exercised."""
    driver.learn()
    in_view = {d["_id"] for d in live.docs}
    for job in driver.known:
        types = [e["type"] for e in app.history(job)]
        if "Retried" in types:
            event("a mutation was retried (S15)")
        if "Canceled" in types and "Started" in types:
            event("a started job was canceled (S21, S22)")
    if any(job not in in_view for job in driver.known):
        event("a finished job left the view (S28)")
    if len(driver.captures) > 1:
        event("captured before the end")
    event(
        "documents at the end: "
        + ("none" if not live.docs else "1-9" if len(live.docs) < 10 else "10+")
    )


@SETTINGS
@given(ops=operations)
def test_replay_gives_the_live_view_now_and_as_of_every_instant_s27(
    ops: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory(prefix="schedlog-replay-") as tmp:
        clock = FakeClock(now_ms=T0)
        app = build(Path(tmp) / "jobs.db", clock)
        try:
            app.start()
            driver = Driver(app, clock)
            for op in ops:
                driver.run(op)
            app.wait_until_idle()
            driver.captures[clock.now_ms()] = None  # the end is an instant too
            driver.leaving_now()
            live = snapshot(app)
            assert live.counts == counted(live.docs)
            note_coverage(app, driver, live)

            applied = app.replay()
            assert applied >= len(live.docs)
            assert snapshot(app) == live

            for at_ms, captured in driver.captures.items():
                assert captured is not None
                assert captured.counts == counted(captured.docs)
                with app.replay(as_of=at_ms) as past:
                    docs = documents(past)
                    assert docs == captured.docs, f"as of {at_ms - T0} ms"
                    assert past.stats(at_ms).counts == captured.counts
            assert snapshot(app) == live  # as-of views leave the live one alone
        finally:
            app.close()
            pykka.ActorRegistry.stop_all(block=True, timeout=10)


def test_retention_due_for_a_job_finished_while_settling_is_applied_s28() -> None:
    with tempfile.TemporaryDirectory(prefix="schedlog-replay-") as tmp:
        clock = FakeClock(now_ms=T0)
        app = App(store=f"sqlite://{tmp}/jobs.db", clock=clock, max_concurrency=1, retention_ms=0)
        passes = threading.Event()
        original = app.apply_retention

        def retention_then_signal(now_ms: int) -> int:
            removed = original(now_ms)
            if clock.now_ms() > T0:
                passes.set()
            return removed

        app.apply_retention = retention_then_signal  # type: ignore[method-assign]

        @app.action(name="prop:slow")
        def slow(ctx: Any) -> None:  # finishes only after a retention pass at its own instant
            assert passes.wait(timeout=10)

        try:
            app.start()
            job = app.scheduler.run_after(1_000, slow)
            clock.advance(1_000)
            app.wait_until_idle()
            assert app.history(job)[-1]["type"] == "Completed"
            live = snapshot(app)
            with app.replay(as_of=clock.now_ms()) as past:
                assert documents(past) == live.docs  # as of now: retention due, job gone
            app.replay()
            assert snapshot(app) == live  # replay gives exactly the view it replaced
            assert live.docs == []
        finally:
            app.close()
            pykka.ActorRegistry.stop_all(block=True, timeout=10)


def test_as_of_an_instant_inside_a_running_mutation_shows_its_attempt_s14_s27() -> None:
    """Documented (README, "Audit"): `as_of` files every event under its own time. A mutation's
    `Started` and the jobs it schedules are stamped when its attempt began (`ctx.now_ms`, S7), so
    as of an instant inside the attempt the mutation shows `inProgress` and its children exist,
    although live readers saw it `pending` until the commit (S14)."""
    with tempfile.TemporaryDirectory(prefix="schedlog-replay-") as tmp:
        clock = FakeClock(now_ms=T0)
        app = App(store=f"sqlite://{tmp}/jobs.db", clock=clock, max_concurrency=1)
        seen: dict[int, list[dict[str, Any]]] = {}

        @app.action(name="prop:child")
        def child(ctx: Any) -> None:
            del ctx

        @app.mutation(name="prop:slow")
        def slow(ctx: Any) -> None:  # 100 ms of work, looked at from outside halfway
            ctx.scheduler.run_after(10_000, child)
            clock.advance(50)
            seen[clock.now_ms()] = documents(app.scheduled_functions)
            clock.advance(50)

        try:
            app.start()
            job = app.scheduler.run_after(1_000, slow)
            clock.advance(1_000)
            app.wait_until_idle()
            assert [e["type"] for e in app.history(job)] == ["Scheduled", "Started", "Completed"]
            [(halfway, live)] = seen.items()
            assert [d["state"]["kind"] for d in live] == ["pending"]  # S14: not yet committed
            with app.replay(as_of=halfway) as past:
                docs = documents(past)
            assert [d["name"] for d in docs] == ["prop:slow", "prop:child"]
            assert [d["state"]["kind"] for d in docs] == ["inProgress", "pending"]
            with app.replay(as_of=halfway + 50) as committed:  # at the commit: as readers saw
                assert [d["state"]["kind"] for d in documents(committed)] == [
                    "success",
                    "pending",
                ]
        finally:
            app.close()
            pykka.ActorRegistry.stop_all(block=True, timeout=10)
