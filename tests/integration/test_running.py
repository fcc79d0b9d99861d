"""Running jobs: order and concurrency, mutations exactly once, actions at most once (S12-S18)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pykka
import pytest

from schedlog import App, SchedlogError
from schedlog.actors.commits import CommitPool
from schedlog.actors.lead import LEAD_MS
from schedlog.actors.runner import CHECK_AHEAD_MS, NOT_RUN_CANCELED
from schedlog.shutdown import stop_executors
from schedlog.testing import FakeClock
from tests.integration.helpers import Account, balance, state, types

T0 = 1_800_000_000_000
WAIT_S = 10


def test_due_order_then_fifo_s13(clock: FakeClock, store_url: str) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=1)
    order: list[str] = []

    @app.action(name="jobs:record")
    def record(ctx, label: str) -> None:
        order.append(label)

    try:
        app.scheduler.run_after(300, record, "c")
        app.scheduler.run_after(100, record, "a1")
        app.scheduler.run_after(200, record, "b")
        app.scheduler.run_after(100, record, "a2")
        app.scheduler.run_after(100, record, "a3")
        app.start()
        clock.advance(1_000)
        app.wait_until_idle()
        assert order == ["a1", "a2", "a3", "b", "c"]
    finally:
        app.close()


def register_stamp(app: App) -> list[int]:
    """Register the action `jobs:stamp`; return the list of its `ctx.now_ms`, one per run."""
    started: list[int] = []

    @app.action(name="jobs:stamp")
    def stamp(ctx) -> None:
        started.append(ctx.now_ms)

    return started


def test_a_job_read_ahead_of_its_due_time_starts_at_it_not_before_s13(
    clock: FakeClock, store_url: str
) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=1)
    started = register_stamp(app)

    @app.mutation(name="jobs:stamp_m")
    def stamp_m(ctx) -> None:
        started.append(ctx.now_ms)

    try:
        action = app.scheduler.run_after(10, "jobs:stamp")
        mutation = app.scheduler.run_after(20, stamp_m)
        app.start()
        clock.advance(9)  # within LEAD_MS: the action is handed over, read and claimed
        app.wait_until_idle()  # a job waiting for its due time does not keep the App busy
        assert started == []  # its function waits for the due time
        assert state(app, action) == "inProgress"  # claimed ahead (S17)
        assert [e["type"] for e in app.history(action)] == ["Scheduled", "Started"]
        clock.advance(1)
        app.wait_until_idle()
        clock.advance(9)
        app.wait_until_idle()
        assert started == [T0 + 10]
        assert state(app, mutation) == "pending"
        clock.advance(1)
        app.wait_until_idle()
        assert started == [T0 + 10, T0 + 20]
        assert [state(app, j) for j in (action, mutation)] == ["success", "success"]
        # Started says when it was claimed (1 ms ahead): replay as of T0+9 shows it in
        # progress, as the live view did then (S27); its function started at T0+10.
        assert app.history(action)[1]["time"] == T0 + 9
    finally:
        app.close()


def test_idle_while_every_executor_holds_a_job_waiting_for_its_due_time_s13(
    clock: FakeClock, store_url: str
) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=1)
    ran: list[str] = []

    @app.mutation(name="jobs:note")
    def note(ctx, label: str) -> None:
        ran.append(label)

    try:
        app.start()
        app.scheduler.run_after(1, note, "soon")  # handed over ahead: holds the one executor
        app.wait_until_idle()
        due = app.scheduler.run_after(0, note, "now")  # due now, waits for that executor
        app.wait_until_idle(timeout_s=5)  # nothing happens until the clock moves: idle
        assert ran == []
        assert state(app, due) == "pending"
        clock.advance(1)
        app.wait_until_idle()
        assert ran == ["soon", "now"]
    finally:
        app.close()


def test_an_action_claimed_ahead_and_canceled_before_it_is_due_never_runs_s20_s21(
    clock: FakeClock, store_url: str
) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=1)
    ran = register_stamp(app)

    try:
        action = app.scheduler.run_after(LEAD_MS + 2, "jobs:stamp")
        app.start()
        clock.advance(2)  # LEAD_MS ahead: claimed ahead of its due time
        app.wait_until_idle()
        assert state(app, action) == "inProgress"
        app.scheduler.cancel(action)
        # due: the executor saw the cancel (CHECK_AHEAD_MS before) and did not run it
        clock.advance(LEAD_MS)
        app.wait_until_idle()
        assert ran == []
        assert state(app, action) == "canceled"
        history = app.history(action)
        assert [e["type"] for e in history] == ["Scheduled", "Started", "Canceled", "Completed"]
        assert history[-1]["outcome"] == "failed"
        assert history[-1]["error"] == NOT_RUN_CANCELED
    finally:
        app.close()


def test_a_cancel_after_the_look_before_the_due_time_is_a_cancel_in_progress_s21(
    clock: FakeClock, store_url: str
) -> None:
    """The claimed action looks for a cancel `CHECK_AHEAD_MS` before it is due; a cancel
    landing after that finds it in progress: it runs, and its state stays canceled."""
    app = App(store=store_url, clock=clock, max_concurrency=1)
    ran = register_stamp(app)

    try:
        action = app.scheduler.run_after(LEAD_MS + 2, "jobs:stamp")
        app.start()
        clock.advance(2)  # LEAD_MS ahead: claimed
        app.wait_until_idle()
        assert state(app, action) == "inProgress"
        clock.advance(LEAD_MS - CHECK_AHEAD_MS)  # it looked: no cancel
        app.wait_until_idle()
        assert ran == []
        app.scheduler.cancel(action)
        clock.advance(CHECK_AHEAD_MS)  # due
        app.wait_until_idle()
        assert ran == [clock.now_ms()]  # at its due time
        assert state(app, action) == "canceled"
        history = app.history(action)
        assert [e["type"] for e in history] == ["Scheduled", "Started", "Canceled", "Completed"]
        assert history[-1]["outcome"] == "success"
    finally:
        app.close()


def test_a_slow_claim_makes_later_actions_go_over_earlier_s13_s17(
    clock: FakeClock, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim that outlasted the lead (its commit took `LEAD_MS` + 4 ms, past the due time)
    makes the timer hand the next lone action over that much earlier (plus 2 ms), so that its
    claim's commit is done by its due time; it still starts at its due time."""
    app = App(store=store_url, clock=clock, max_concurrency=2)
    ran = register_stamp(app)
    save = app.save
    slow = threading.Event()
    slow_ms = LEAD_MS + 4
    lead = slow_ms + 2

    def slow_save(*objs: Any, **kwargs: Any) -> None:
        if slow.is_set():
            clock.advance(slow_ms)  # the commit takes that long
        save(*objs, **kwargs)

    monkeypatch.setattr(app, "save", slow_save)
    try:
        first = app.scheduler.run_after(20, "jobs:stamp")
        app.start()
        slow.set()
        clock.advance(20 - LEAD_MS)  # handed over LEAD_MS early; claimed 4 ms late
        app.wait_until_idle()
        slow.clear()
        assert state(app, first) == "success"
        assert ran == [T0 + 20]  # ctx.now_ms: its due time (it ran once claimed, 4 ms late)
        second = app.scheduler.run_at(T0 + 100, "jobs:stamp")
        clock.set(T0 + 100 - lead - 1)
        app.wait_until_idle()
        assert state(app, second) == "pending"
        clock.advance(1)  # `lead` ahead: handed over, read and claimed at once
        app.wait_until_idle()
        assert state(app, second) == "inProgress"
        assert ran == [T0 + 20]
        clock.set(T0 + 100)
        app.wait_until_idle()
        assert ran == [T0 + 20, T0 + 100]  # on time
    finally:
        app.close()


def test_at_most_max_concurrency_run_at_once_s13(clock: FakeClock, store_url: str) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=2)
    lock = threading.Lock()
    running = 0
    peak = 0
    two_running = threading.Event()
    release = threading.Event()

    @app.action(name="jobs:block")
    def block(ctx) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            if running == 2:
                two_running.set()
        release.wait(WAIT_S)
        with lock:
            running -= 1

    try:
        jobs = [app.scheduler.run_after(0, block) for _ in range(5)]
        app.start()
        assert two_running.wait(WAIT_S)
        assert sorted(state(app, j) for j in jobs) == [
            "inProgress",
            "inProgress",
            "pending",
            "pending",
            "pending",
        ]
        release.set()
        app.wait_until_idle()
        assert peak == 2
        assert {state(app, j) for j in jobs} == {"success"}
    finally:
        release.set()
        app.close()


def test_a_slot_runs_the_next_job_while_a_commit_waits_s13(
    clock: FakeClock, store_url: str
) -> None:
    """The final commit runs outside the slot; the job counts as running until it lands.

    One commit may be in flight per slot: the next job's function runs, and its commit waits.
    """
    app = App(store=store_url, clock=clock, max_concurrency=1)
    ran: list[str] = []
    second_ran = threading.Event()
    commit_blocked = threading.Event()
    release_commit = threading.Event()

    @app.mutation(name="jobs:note")
    def note(ctx, label: str) -> None:
        ran.append(label)
        if label == "second":
            second_ran.set()

    first = app.scheduler.run_after(0, note, "first")
    second = app.scheduler.run_after(0, note, "second")
    save = app.store.save

    def slow_save(*objs: Any, **kwargs: Any) -> Any:
        if first in {getattr(o, "job_id", None) for o in objs}:
            commit_blocked.set()
            assert release_commit.wait(WAIT_S)
        return save(*objs, **kwargs)

    app.store.save = slow_save  # type: ignore[method-assign]
    try:
        app.start()
        assert commit_blocked.wait(WAIT_S)
        assert second_ran.wait(WAIT_S)  # the one slot ran the next job meanwhile
        assert ran == ["first", "second"]
        assert (state(app, first), state(app, second)) == ("pending", "pending")
        with pytest.raises(SchedlogError, match="not idle"):  # both commits are still due
            app.wait_until_idle(timeout_s=0.2)
        release_commit.set()
        app.wait_until_idle()
        assert (state(app, first), state(app, second)) == ("success", "success")
        assert ran == ["first", "second"]  # each ran once
    finally:
        release_commit.set()
        app.close()


def test_mutation_commits_writes_children_and_outcome_atomically_s14(
    app: App, clock: FakeClock
) -> None:
    account = Account("ann")
    app.save(account)
    seen_inside: list[str] = []

    @app.mutation(name="bank:deposit")
    def deposit(ctx, account_id: str, cents: int) -> None:
        seen_inside.append(state(app, ctx.job_id))  # other readers see it pending (S14)
        acc = ctx.repository.get(account.id)
        acc.deposit(cents)
        ctx.save(acc)
        ctx.scheduler.run_after(0, "bank:notify", account_id)

    @app.action(name="bank:notify")
    def notify(ctx, account_id: str) -> None:
        del ctx, account_id

    job = app.scheduler.run_after(10, deposit, str(account.id), 250)
    app.start()
    clock.advance(10)
    app.wait_until_idle()
    assert seen_inside == ["pending"]
    assert balance(app, account.id) == 250
    assert types(app, job) == ["Scheduled", "Started", "Completed"]
    started = app.history(job)[1]
    assert started["node_id"] == app.node_id
    assert started["attempt"] == 1
    children = app.scheduled_functions.query(name="bank:notify").items
    assert len(children) == 1
    assert children[0]["state"]["kind"] == "success"
    assert children[0]["_creationTime"] == float(T0 + 10)


def test_a_mutation_reads_the_copy_it_staged_and_saves_one_copy_s14(app: App) -> None:
    # A helper that gets, changes and saves the account, called twice: the second get returns
    # what the first staged, so both deposits commit (no lost write).
    account = Account("dee")
    app.save(account)

    def add(ctx: Any, cents: int) -> None:
        acc = ctx.repository.get(account.id)
        acc.deposit(cents)
        ctx.save(acc)

    @app.mutation(name="bank:twice")
    def twice(ctx) -> None:
        add(ctx, 5)
        add(ctx, 10)
        assert account.id in ctx.repository

    @app.mutation(name="bank:two_copies")
    def two_copies(ctx) -> None:
        staged = ctx.repository.get(account.id)
        staged.deposit(1)
        ctx.save(staged)
        other = app.repository.get(account.id)  # a second copy, from outside the mutation
        other.deposit(2)
        ctx.save(other)

    app.run_mutation(twice)
    assert balance(app, account.id) == 15
    job = app.scheduler.run_after(0, twice)
    bad = app.scheduler.run_after(0, two_copies)
    with app:
        app.wait_until_idle()
    assert state(app, job) == "success"
    assert balance(app, account.id) == 30
    doc = app.scheduled_functions.get(bad)
    assert doc is not None
    assert doc["state"]["kind"] == "failed"  # refused, and nothing of it kept (S16)
    assert "already staged by this mutation from another copy" in doc["state"]["error"]


def test_a_write_to_an_aggregate_a_mutation_read_since_is_a_conflict_s14_s15(
    app: App, clock: FakeClock
) -> None:
    # The mutation only reads the account; another writer deposits after that read. Its
    # commit (what it computed from the stale balance) conflicts: retried, it reads 100.
    account, seen = Account("eve"), Account("seen")
    app.save(account, seen)
    attempts: list[int] = []

    @app.mutation(name="bank:observe")
    def observe(ctx) -> None:
        read = ctx.repository.get(account.id)
        attempts.append(read.balance)
        if ctx.attempt == 1:
            other = app.repository.get(account.id)
            other.deposit(100)
            app.save(other)
        note = ctx.repository.get(seen.id)
        note.deposit(read.balance)
        ctx.save(note)

    job = app.scheduler.run_after(0, observe)
    with app:
        app.wait_until_idle()
        assert types(app, job) == ["Scheduled", "Retried"]
        assert "schedlog read conflict" in app.history(job)[1]["error"]
        assert state(app, job) == "pending"
        clock.advance(60_000)  # past any retry backoff
        app.wait_until_idle()
    assert state(app, job) == "success"
    assert attempts == [0, 100]
    assert balance(app, seen.id) == 100


def test_run_mutation_runs_again_when_what_it_read_changed_s14(app: App) -> None:
    # Also for an aggregate it found missing: one created meanwhile is a write it read.
    account, copied = Account("fay"), Account("copy")
    app.save(account, copied)
    missing = Account("later")
    runs: list[tuple[int, bool]] = []

    @app.mutation(name="bank:copy")
    def copy(ctx) -> int:
        read = ctx.repository.get(account.id)
        exists = missing.id in ctx.repository
        runs.append((read.balance, exists))
        if len(runs) == 1:
            other = app.repository.get(account.id)
            other.deposit(7)
            app.save(other, missing)
        into = ctx.repository.get(copied.id)
        into.deposit(read.balance)
        ctx.save(into)
        return int(read.balance)

    assert app.run_mutation(copy) == 7
    assert runs == [(0, False), (7, True)]
    assert balance(app, copied.id) == 7


def test_reads_are_checked_against_the_saves_before_them_in_one_group_s14(app: App) -> None:
    """A group commit of: a save writing X; one that read X before that write (it conflicts);
    and one whose reads nobody in the group wrote (it commits, on PostgreSQL in the same
    transaction as the first: a group is split only when a save read what one before it
    writes)."""
    from eventsourcing.persistence import IntegrityError

    from schedlog.projections.group_commit import Save
    from schedlog.projections.reads import READ_CONFLICT, READ_VERSIONS

    x, y, z, w = Account("x"), Account("y"), Account("z"), Account("w")
    app.save(x, y, z, w)
    recorder = app.store.view_recorder
    mapper = app.store.mapper

    def save_of(aggregate: Any, reads: dict[Any, int]) -> Save:
        events = [mapper.to_stored_event(e) for e in aggregate.collect_events()]
        return Save(events, {READ_VERSIONS: reads} if reads else {})

    x_before = x.version
    x.deposit(5)
    y.deposit(1)
    z.deposit(2)
    group = [
        save_of(x, {}),
        save_of(y, {x.id: x_before}),  # read X before the first save's write
        save_of(z, {w.id: w.version}),  # read W, which nobody writes
    ]
    transactions: list[int] = []
    together = getattr(recorder, "_commit_together", None)
    if together is not None:  # PostgreSQL: count its transactions

        def counted(saves: list[Save]) -> None:
            transactions.append(len(saves))
            together(saves)

        recorder._commit_together = counted  # type: ignore[union-attr]
    recorder._commit_group(group)
    assert group[0].error is None
    assert group[0].ids
    assert isinstance(group[1].error, IntegrityError)
    assert READ_CONFLICT in str(group[1].error)
    assert group[2].error is None
    assert group[2].ids
    assert (balance(app, x.id), balance(app, y.id), balance(app, z.id)) == (5, 0, 2)
    if together is not None:
        assert transactions == [1, 1, 1]  # one by one: the second read what the first writes
        transactions.clear()
        z.deposit(3)
        w.deposit(4)
        recorder._commit_group([save_of(z, {y.id: y.version - 1}), save_of(w, {x.id: x.version})])
        assert transactions == [2]  # independent reads: one transaction, one check
        assert (balance(app, z.id), balance(app, w.id)) == (5, 4)


def test_mutation_children_share_one_scheduled_time_s7(app: App, clock: FakeClock) -> None:
    @app.mutation(name="jobs:fan_out")
    def fan_out(ctx) -> None:
        for i in range(3):
            ctx.scheduler.run_after(500, "jobs:leaf", i)
        ctx.scheduler.run_at(ctx.now_ms + 500, "jobs:leaf", 99)

    @app.mutation(name="jobs:leaf")
    def leaf(ctx, i: int) -> None:
        del ctx, i

    app.scheduler.run_after(7, fan_out)
    app.start()
    clock.advance(7)
    app.wait_until_idle()
    leaves = app.scheduled_functions.query(name="jobs:leaf").items
    assert [d["args"] for d in leaves] == [[0], [1], [2], [99]]
    assert {d["scheduledTime"] for d in leaves} == {float(T0 + 7 + 500)}


def test_zero_delay_child_runs_only_after_the_commit_s12(app: App) -> None:
    log: list[str] = []

    @app.mutation(name="jobs:parent")
    def parent(ctx) -> None:
        ctx.scheduler.run_after(0, "jobs:child")
        log.append("parent body done")

    parent_state_seen_by_child: list[str] = []

    @app.action(name="jobs:child")
    def child(ctx) -> None:
        log.append("child ran")
        parent_state_seen_by_child.append(state(app, job))

    job = app.scheduler.run_after(0, parent)
    app.start()
    app.wait_until_idle()
    assert log == ["parent body done", "child ran"]
    assert parent_state_seen_by_child == ["success"]  # the parent had committed
    (child_doc,) = app.scheduled_functions.query(name="jobs:child").items
    assert child_doc["state"]["kind"] == "success"
    assert child_doc["_creationTime"] == app.history(job)[-1]["time"]  # born with the commit


def test_failed_mutation_drops_writes_and_children_s16_s11(app: App) -> None:
    account = Account("bob")
    app.save(account)

    @app.mutation(name="bank:bad")
    def bad(ctx) -> None:
        acc = ctx.repository.get(account.id)
        acc.deposit(100)
        ctx.save(acc)
        ctx.scheduler.run_after(0, "bank:bad")
        msg = "insufficient funds"
        raise RuntimeError(msg)

    job = app.scheduler.run_after(0, bad)
    app.start()
    app.wait_until_idle()
    doc = app.scheduled_functions.get(job)
    assert doc is not None
    assert doc["state"]["kind"] == "failed"
    error = doc["state"]["error"]
    assert error.startswith("RuntimeError: insufficient funds")  # the message, then the traceback
    assert "Traceback (most recent call last)" in error
    assert "completedTime" in doc
    assert balance(app, account.id) == 0
    assert len(app.scheduled_functions.query(name="bank:bad").items) == 1  # no child exists
    assert types(app, job) == ["Scheduled", "Started", "Completed"]
    assert app.history(job)[-1]["outcome"] == "failed"


def test_mutation_scheduling_limit_s10(app: App) -> None:
    errors: list[str] = []

    @app.mutation(name="jobs:greedy")
    def greedy(ctx) -> None:
        for _ in range(1000):
            ctx.scheduler.run_after(1_000, "jobs:greedy")
        try:
            ctx.scheduler.run_after(1_000, "jobs:greedy")
        except SchedlogError as e:
            errors.append(str(e))
            raise

    job = app.scheduler.run_after(0, greedy)
    app.start()
    app.wait_until_idle(timeout_s=60)
    assert errors == ["too many functions scheduled by this mutation (limit: 1000)"]
    assert state(app, job) == "failed"
    assert len(app.scheduled_functions.query(name="jobs:greedy", limit=1000).items) == 1


def test_the_s10_warning_names_the_mutation_and_how_it_runs(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    @app.action(name="jobs:noop")
    def noop(ctx) -> None:
        del ctx

    @app.mutation(name="jobs:fill")
    def fill(ctx, n: int) -> None:
        for _ in range(n):
            ctx.scheduler.run_after(60_000, "jobs:noop")

    @app.action(name="jobs:caller")
    def caller(ctx) -> None:
        ctx.run_mutation("jobs:fill", 800)

    caplog.set_level(logging.WARNING, logger="schedlog")
    app.run_mutation("jobs:fill", 799)  # below 80 %: no warning
    assert [r for r in caplog.records if "80%" in r.getMessage()] == []
    app.run_mutation("jobs:fill", 800)
    job = app.scheduler.run_after(0, "jobs:fill", 800)
    action = app.scheduler.run_after(0, caller)
    app.start()
    app.wait_until_idle(timeout_s=60)
    warnings = sorted(r.getMessage() for r in caplog.records if "80%" in r.getMessage())
    tail = ": over 80% of the limit of functions scheduled (1000)"
    assert warnings == sorted(
        [
            "mutation 'jobs:fill' (app.run_mutation)" + tail,
            f"mutation 'jobs:fill' (job {job})" + tail,
            f"mutation 'jobs:fill' (ctx.run_mutation of action {action})" + tail,
        ]
    )


def test_action_claims_before_running_and_records_outcome_s17(app: App) -> None:
    seen: list[str] = []

    @app.action(name="io:fetch")
    def fetch(ctx) -> None:
        seen.append(state(app, ctx.job_id))

    @app.action(name="io:broken")
    def broken(ctx) -> None:
        msg = "HTTP 500"
        raise OSError(msg)

    ok = app.scheduler.run_after(0, fetch)
    bad = app.scheduler.run_after(0, broken)
    app.start()
    app.wait_until_idle()
    assert seen == ["inProgress"]
    assert types(app, ok) == ["Scheduled", "Started", "Completed"]
    assert state(app, ok) == "success"
    assert state(app, bad) == "failed"
    assert app.scheduled_functions.get(bad)["state"]["error"].startswith("OSError: HTTP 500")  # type: ignore[index]
    assert types(app, bad) == ["Scheduled", "Started", "Completed"]  # never retried


def test_action_effects_stay_when_it_fails_s18(app: App) -> None:
    account = Account("cy")
    app.save(account)
    results: list[Any] = []

    @app.mutation(name="bank:deposit")
    def deposit(ctx, cents: int) -> int:
        acc = ctx.repository.get(account.id)
        acc.deposit(cents)
        ctx.save(acc)
        return int(acc.balance)

    @app.action(name="io:pay")
    def pay(ctx) -> None:
        results.append(ctx.run_mutation(deposit, 40))
        ctx.scheduler.run_after(60_000, "bank:deposit", 1)
        msg = "gateway timeout"
        raise TimeoutError(msg)

    job = app.scheduler.run_after(0, pay)
    app.start()
    app.wait_until_idle()
    assert results == [40]
    assert balance(app, account.id) == 40
    assert state(app, job) == "failed"
    (later,) = app.scheduled_functions.query(name="bank:deposit").items
    assert later["state"]["kind"] == "pending"


def test_context_fields(app: App, clock: FakeClock) -> None:
    seen: dict[str, Any] = {}

    @app.mutation(name="jobs:inspect")
    def inspect(ctx) -> None:
        seen.update(job_id=ctx.job_id, now=ctx.now_ms, attempt=ctx.attempt)

    job = app.scheduler.run_after(42, inspect)
    app.start()
    clock.advance(42)
    app.wait_until_idle()
    assert seen == {"job_id": job, "now": T0 + 42, "attempt": 1}


def test_graceful_stop_lets_running_functions_finish(clock: FakeClock, store_url: str) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=2)
    started = threading.Event()
    release = threading.Event()

    @app.action(name="jobs:slow")
    def slow(ctx) -> None:
        started.set()
        release.wait(WAIT_S)

    try:
        running = app.scheduler.run_after(0, slow)
        app.start()
        assert started.wait(WAIT_S)
        later = app.scheduler.run_after(0, slow)  # accepted while stopping: stays pending
        stopper = threading.Thread(target=app.stop)
        stopper.start()
        release.set()
        stopper.join(WAIT_S)
        assert not stopper.is_alive()
        assert state(app, running) == "success"
        assert state(app, later) in {"pending", "success"}
    finally:
        release.set()
        app.close()


class _BusyExecutor:
    """Stands in for an executor whose function outlasts the stop: records the stop's steps."""

    def __init__(self, name: str, steps: list[tuple[str, str, float | None]]) -> None:
        self.name, self.steps = name, steps

    def stop(self, *, block: bool) -> _BusyExecutor:
        assert block is False  # asked, not waited for: the others are asked at once too
        self.steps.append(("stop", self.name, None))
        return self

    def get(self, timeout: float | None = None) -> bool:
        self.steps.append(("wait", self.name, timeout))
        raise pykka.Timeout("still running its function")


def test_one_stop_timeout_bounds_every_running_function_together() -> None:
    steps: list[tuple[str, str, float | None]] = []
    executors = [_BusyExecutor(name, steps) for name in ("a", "b", "c")]
    finished = stop_executors(executors, CommitPool(1), timeout_s=30)  # type: ignore[arg-type]
    assert finished is False
    assert [step[:2] for step in steps] == [
        ("stop", "a"),
        ("stop", "b"),
        ("stop", "c"),
        ("wait", "a"),
        ("wait", "b"),
        ("wait", "c"),
    ]
    waits = [timeout for kind, _, timeout in steps if kind == "wait"]
    assert all(w is not None and 0 <= w <= 30 for w in waits)
    assert waits == sorted(waits, reverse=True)  # what is left of one deadline, not 30 s each
    assert waits[-1] < 30


@pytest.mark.parametrize("kind", ["mutation", "action"])
def test_jobs_saved_by_another_app_on_the_store_run_s11b(
    clock: FakeClock, store_url: str, kind: str
) -> None:
    worker = App(store=store_url, clock=clock)
    web = App(store=store_url, clock=clock)
    ran: list[str] = []
    for app in (worker, web):
        register = app.mutation if kind == "mutation" else app.action
        register(name="jobs:work")(lambda ctx: ran.append(ctx.job_id))
    try:
        worker.start()
        job = web.scheduler.run_after(100, "jobs:work")  # web never starts a runtime
        clock.advance(100)
        worker.wait_until_idle()
        assert ran == [job]
        assert state(web, job) == "success"
        assert web.history(job)[1]["node_id"] == worker.node_id
    finally:
        web.close()
        worker.close()


def test_a_backlog_larger_than_the_timer_window_runs_in_order_s13(
    clock: FakeClock, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import schedlog.actors.timer as timer_module

    monkeypatch.setattr(timer_module, "WINDOW", 4)  # the heap holds a few rows at a time
    app = App(store=store_url, clock=clock, max_concurrency=1)
    order: list[int] = []

    @app.mutation(name="jobs:n")
    def n(ctx, i: int) -> None:
        order.append(i)

    try:
        expected = []
        for i in range(23):
            delay = (i * 7) % 5 * 100  # several jobs share each due time
            expected.append((delay, i))
            app.scheduler.run_after(delay, n, i)
        far = app.scheduler.run_after(90_000, n, 99)  # beyond the horizon
        app.start()
        clock.advance(1_000)
        app.wait_until_idle()
        assert order == [i for _, i in sorted(expected)]
        assert state(app, far) == "pending"
        clock.advance(90_000)
        app.wait_until_idle()
        assert order[-1] == 99
    finally:
        app.close()


def test_mutation_scheduled_arguments_total_limit_s10(app: App) -> None:
    errors: list[str] = []
    chunk = "x" * (6 * 1024 * 1024)

    @app.mutation(name="jobs:heavy")
    def heavy(ctx) -> None:
        ctx.scheduler.run_after(1_000, "jobs:heavy_leaf", chunk)
        ctx.scheduler.run_after(1_000, "jobs:heavy_leaf", chunk)
        try:
            ctx.scheduler.run_after(1_000, "jobs:heavy_leaf", chunk)  # 18 MiB in all
        except SchedlogError as e:
            errors.append(str(e))

    @app.mutation(name="jobs:heavy_leaf")
    def heavy_leaf(ctx, payload: str) -> None:
        del ctx, payload

    job = app.scheduler.run_after(0, heavy)
    app.start()
    app.wait_until_idle()
    assert len(errors) == 1
    assert "the limit is 16777216 (16 MiB)" in errors[0]
    assert state(app, job) == "success"  # the mutation caught it: the first two are kept
    assert len(app.scheduled_functions.query(name="jobs:heavy_leaf").items) == 2


def test_nodes_on_postgresql_share_the_work_by_job_id(clock: FakeClock, pg_server: str) -> None:
    import uuid

    from tests.conftest import pg_url

    url = pg_url(f"{pg_server}_{uuid.uuid4().hex[:10]}")
    nodes = [App(store=url, clock=clock, lease_ms=120_000) for _ in range(2)]  # live throughout
    ran: dict[str, list[str]] = {node.node_id: [] for node in nodes}
    for node in nodes:
        node.action(name="jobs:work")(lambda ctx, node=node: ran[node.node_id].append(ctx.job_id))
    try:
        for node in nodes:
            node.start()
            node.wait_until_idle()  # heartbeats: each node is live for the other
        clock.advance(31_000)  # past half the horizon: both timers read the live nodes again
        for node in nodes:
            node.wait_until_idle()
        jobs = [nodes[0].scheduler.run_after(0, "jobs:work") for _ in range(40)]
        for node in nodes:
            node.wait_until_idle()
        assert sorted(ran[nodes[0].node_id] + ran[nodes[1].node_id]) == sorted(jobs)  # once each
        assert all(len(done) >= 5 for done in ran.values()), {k: len(v) for k, v in ran.items()}
    finally:
        for node in nodes:
            node.close()
