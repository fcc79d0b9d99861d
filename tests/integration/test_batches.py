"""A backlog runs in batches: one executor takes several due jobs and shares their saves.

Batches are taken only when the timer is behind (the earliest due job `BEHIND_MS` late), so
these tests move the fake clock past the due time before starting the runtime.

Mutations of a batch commit in one save (S14 still holds for each: a save that fails is retried
one mutation at a time); quick actions are claimed several at a time, each claim sharing a
save with the outcomes of the actions before it, slow ones one at a time (S13, S17).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any
from uuid import UUID

from schedlog import App
from schedlog.actors.batch import BATCH_BUDGET_MS, CHUNK_MAX, QUICK_MS, Batch
from schedlog.actors.timer import BEHIND_MS
from schedlog.testing import FakeClock
from tests.integration.helpers import Account, balance, state, types

if TYPE_CHECKING:
    from collections.abc import Sequence

T0 = 1_800_000_000_000
JOBS = 24


def _spy_saves(app: App) -> list[list[str]]:
    """Record the event types of every save the runtime makes (the App's `save`)."""
    saves: list[list[str]] = []
    save = app.save

    def spied(*objs: Any, **kwargs: Any) -> None:
        saves.append([type(e).__name__ for o in objs for e in getattr(o, "pending_events", ())])
        save(*objs, **kwargs)

    app.save = spied  # type: ignore[method-assign]
    return saves


def _spy_batches(app: App) -> list[Batch]:
    batches: list[Batch] = []
    run_batch = app._runner.run_batch

    def spied(job_ids: Sequence[str]) -> Batch:
        batch = run_batch(job_ids)
        batches.append(batch)
        return batch

    app._runner.run_batch = spied  # type: ignore[method-assign]
    return batches


def test_a_backlog_of_mutations_commits_in_batches_each_once_s14(
    clock: FakeClock, store_url: str
) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=2)
    ran: list[int] = []

    @app.mutation(name="acct:deposit")
    def deposit(ctx, account_id: str, index: int) -> None:
        account: Any = ctx.repository.get(UUID(account_id))
        account.deposit(1)
        ctx.save(account)
        ran.append(index)

    try:
        accounts = [Account(f"owner{i}") for i in range(JOBS)]
        app.save(*accounts)
        jobs = [app.scheduler.run_after(0, deposit, str(a.id), i) for i, a in enumerate(accounts)]
        saves = _spy_saves(app)
        batches = _spy_batches(app)
        clock.advance(BEHIND_MS)  # a backlog: the timer is behind
        app.start()
        app.wait_until_idle()
        assert sorted(ran) == list(range(JOBS))  # every function ran once: no conflict
        assert all(state(app, j) == "success" for j in jobs)
        assert all(balance(app, a.id) == 1 for a in accounts)
        assert all(types(app, j) == ["Scheduled", "Started", "Completed"] for j in jobs)
        assert batches, "a backlog larger than the executors is started in batches"
        commits = [s for s in saves if "Completed" in s]
        assert len(commits) < JOBS  # several mutations' commits shared a save
        assert max(s.count("Completed") for s in commits) > 1
    finally:
        app.close()


def test_a_batch_whose_commit_conflicts_commits_each_mutation_alone_s14_s22(
    clock: FakeClock, store_url: str
) -> None:
    # One batch of two: the first cancels the second, which has run its function meanwhile.
    # Their shared commit conflicts; tried alone, the first commits and the second conflicts
    # with the cancel: it stops without effect, and is not run again.
    app = App(store=store_url, clock=clock, max_concurrency=1)
    account = Account("owner")
    ran: list[str] = []

    @app.mutation(name="acct:deposit")
    def deposit(ctx, account_id: str) -> None:
        got: Any = ctx.repository.get(UUID(account_id))
        got.deposit(5)
        ctx.save(got)
        ran.append("deposit")

    @app.mutation(name="jobs:cancel")
    def cancel(ctx, job_id: str) -> None:
        ctx.scheduler.cancel(job_id)
        ran.append("cancel")

    try:
        app.save(account)
        victim = app.scheduler.run_after(200, deposit, str(account.id))
        canceler = app.scheduler.run_after(100, cancel, victim)
        batches = _spy_batches(app)
        app.start()
        clock.advance(300)  # both due, and late: one executor takes both
        app.wait_until_idle()
        assert [len(b.decided) + len(b.committing) for b in batches] == [2]
        assert state(app, canceler) == "success"
        assert state(app, victim) == "canceled"  # S22: the cancel landed first
        assert types(app, victim) == ["Scheduled", "Canceled"]
        assert balance(app, account.id) == 0  # its staged deposit was never committed
        assert ran == ["cancel", "deposit"]  # each function ran once
    finally:
        app.close()


def test_quick_actions_in_a_batch_are_claimed_several_at_a_time_s13_s17(
    clock: FakeClock, store_url: str
) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=1)
    in_progress: list[int] = []

    @app.action(name="jobs:look")
    def look(ctx) -> None:
        del ctx
        in_progress.append(app.stats().counts["inProgress"])

    n = 2 * CHUNK_MAX  # one batch: a first claim of one, a chunk, then the rest
    try:
        jobs = [app.scheduler.run_after(0, look) for _ in range(n)]
        saves = _spy_saves(app)
        clock.advance(BEHIND_MS)
        app.start()
        app.wait_until_idle()
        assert all(state(app, j) == "success" for j in jobs)
        assert all(types(app, j) == ["Scheduled", "Started", "Completed"] for j in jobs)
        # The first claim takes one action, to see; it was quick, so the next take CHUNK_MAX.
        assert in_progress[:2] == [1, CHUNK_MAX]
        assert max(in_progress) == CHUNK_MAX  # claimed, waiting their turn, or running
        claims = [s.count("Started") for s in saves if "Started" in s]
        assert claims[:2] == [1, CHUNK_MAX]
        assert sum(claims) == n
        # Each claim after the first carries the outcomes of the chunk before it.
        assert ["Completed", "Started", *["Started"] * (CHUNK_MAX - 1)] in saves
        assert len(saves) <= n // CHUNK_MAX + 3
    finally:
        app.close()


def test_slow_actions_in_a_batch_are_claimed_one_at_a_time_s13_s17(
    clock: FakeClock, store_url: str
) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=1)
    in_progress: list[int] = []

    @app.action(name="jobs:slow_look")
    def slow_look(ctx) -> None:
        del ctx
        in_progress.append(app.stats().counts["inProgress"])
        clock.advance(QUICK_MS + 1)  # slower than a chunk's actions may be

    try:
        jobs = [app.scheduler.run_after(0, slow_look) for _ in range(6)]
        saves = _spy_saves(app)
        clock.advance(BEHIND_MS)
        app.start()
        app.wait_until_idle()
        assert all(state(app, j) == "success" for j in jobs)
        assert in_progress == [1] * 6  # only the running action is claimed
        assert all(s.count("Started") <= 1 for s in saves)
        assert ["Completed", "Started"] in saves  # a claim still carries the outcome before it
    finally:
        app.close()


def test_a_slow_function_is_claimed_alone_among_quick_ones_s13_s17(
    clock: FakeClock, store_url: str
) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=1)
    seen: list[tuple[str, int]] = []

    @app.action(name="jobs:quick")
    def quick(ctx) -> None:
        del ctx
        seen.append(("quick", app.stats().counts["inProgress"]))

    @app.action(name="jobs:slow")
    def slow(ctx) -> None:
        del ctx
        seen.append(("slow", app.stats().counts["inProgress"]))
        clock.advance(QUICK_MS)  # not under QUICK_MS: slow

    try:
        kinds = [quick] * 4 + [slow] + [quick] * 4 + [slow]
        jobs = [app.scheduler.run_after(0, fn) for fn in kinds]
        saves = _spy_saves(app)
        clock.advance(BEHIND_MS)
        app.start()
        app.wait_until_idle()
        assert [name for name, _ in seen] == [fn.__name__ for fn in kinds]  # due order (S13)
        assert all(state(app, j) == "success" for j in jobs)
        # Unknown functions are claimed alone until they have run once; quick ones together.
        assert [s.count("Started") for s in saves if "Started" in s] == [1, 3, 1, 4, 1]
        assert [n for name, n in seen if name == "slow"] == [1, 1]  # nothing waits behind one
    finally:
        app.close()


def test_a_chunk_whose_claim_conflicts_claims_each_action_alone_s17_s20(
    clock: FakeClock, store_url: str
) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=1)
    ran: list[int] = []
    jobs: list[str] = []

    @app.action(name="jobs:cancel_one")
    def cancel_one(ctx, index: int) -> None:
        ran.append(index)
        if index == 0:  # canceled after the batch read it, before the next chunk's claim
            ctx.scheduler.cancel(jobs[3])

    try:
        jobs += [app.scheduler.run_after(0, cancel_one, i) for i in range(6)]
        saves = _spy_saves(app)
        clock.advance(BEHIND_MS)
        app.start()
        app.wait_until_idle()
        assert ran == [0, 1, 2, 4, 5]  # the canceled one never ran (S20), the rest once each
        assert types(app, jobs[3]) == ["Scheduled", "Canceled"]
        assert state(app, jobs[3]) == "canceled"
        for job in jobs[:3] + jobs[4:]:
            assert types(app, job) == ["Scheduled", "Started", "Completed"]
            assert state(app, job) == "success"
        assert ["Completed", *["Started"] * 5] in saves  # the chunk's claim that lost
    finally:
        app.close()


def test_a_cancel_of_an_action_claimed_in_a_chunk_is_a_cancel_in_progress_s21(
    clock: FakeClock, store_url: str
) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=1)
    ran: list[int] = []
    jobs: list[str] = []

    @app.action(name="jobs:cancel_later")
    def cancel_later(ctx, index: int) -> None:
        ran.append(index)
        if index == 1:  # the first of a chunk claimed together: job 3 is claimed, waiting
            ctx.scheduler.cancel(jobs[3])

    try:
        jobs += [app.scheduler.run_after(0, cancel_later, i) for i in range(6)]
        saves = _spy_saves(app)
        clock.advance(BEHIND_MS)
        app.start()
        app.wait_until_idle()
        assert [s.count("Started") for s in saves if "Started" in s] == [1, 5]
        assert ran == list(range(6))  # it was in progress: not interrupted, run once (S21)
        assert types(app, jobs[3]) == ["Scheduled", "Started", "Canceled", "Completed"]
        assert state(app, jobs[3]) == "canceled"
        assert all(state(app, j) == "success" for j in jobs if j != jobs[3])
    finally:
        app.close()


def test_a_batch_starts_actions_and_mutations_in_due_order_s13(
    clock: FakeClock, store_url: str
) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=1)
    order: list[int] = []

    @app.action(name="jobs:act")
    def act(ctx, index: int) -> None:
        del ctx
        order.append(index)

    @app.mutation(name="jobs:mutate")
    def mutate(ctx, index: int) -> None:
        del ctx
        order.append(index)

    try:
        kinds = [act, act, act, mutate, act, act, mutate, act]
        jobs = [app.scheduler.run_after(0, fn, i) for i, fn in enumerate(kinds)]
        clock.advance(BEHIND_MS)
        app.start()
        app.wait_until_idle()
        assert order == list(range(len(kinds)))  # a chunk of actions runs before a mutation
        assert all(state(app, j) == "success" for j in jobs)
    finally:
        app.close()


def test_a_batch_that_runs_out_of_time_returns_the_rest_untouched_s13(
    clock: FakeClock, store_url: str
) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=1)
    order: list[int] = []

    @app.mutation(name="jobs:slow")
    def slow(ctx, index: int) -> None:
        del ctx
        order.append(index)
        if index == 0:
            clock.advance(BATCH_BUDGET_MS + 1)  # the first job uses up the batch's time

    try:
        jobs = [app.scheduler.run_after(0, slow, i) for i in range(6)]
        batches = _spy_batches(app)
        clock.advance(BEHIND_MS)
        app.start()
        app.wait_until_idle()
        assert order == list(range(6))  # each once, still in due order
        assert all(state(app, j) == "success" for j in jobs)
        assert batches[0].returned == tuple(jobs[1:])
        assert all(types(app, j) == ["Scheduled", "Started", "Completed"] for j in jobs)
    finally:
        app.close()


def test_a_stop_during_a_batch_leaves_the_jobs_not_started_pending(
    clock: FakeClock, store_url: str
) -> None:
    app = App(store=store_url, clock=clock, max_concurrency=1)
    started = threading.Event()

    @app.action(name="jobs:block")
    def block(ctx, index: int) -> None:
        del ctx
        if index == 0:
            started.set()
            app._runner.closing.wait(10)  # runs until the stop begins

    try:
        jobs = [app.scheduler.run_after(0, block, i) for i in range(4)]
        clock.advance(BEHIND_MS)
        app.start()
        assert started.wait(10)
        app.stop()  # graceful: the running action ends, the batch starts nothing more
        assert state(app, jobs[0]) == "success"
        assert [state(app, j) for j in jobs[1:]] == ["pending"] * 3
    finally:
        app.close()


def test_jobs_that_have_just_come_due_start_alone_s13(clock: FakeClock, store_url: str) -> None:
    # Not behind: each job goes to the first free executor, none waits in another's batch.
    app = App(store=store_url, clock=clock, max_concurrency=1)

    @app.mutation(name="jobs:noop")
    def noop(ctx) -> None:
        del ctx

    try:
        jobs = [app.scheduler.run_after(0, noop) for _ in range(6)]
        batches = _spy_batches(app)
        app.start()
        app.wait_until_idle()
        assert all(state(app, j) == "success" for j in jobs)
        assert batches == []
    finally:
        app.close()


def test_two_mutations_of_a_batch_writing_one_aggregate_both_commit_s14_s15(
    clock: FakeClock, store_url: str
) -> None:
    # Both read the account at the same version: their shared commit conflicts. Alone, the
    # first commits; the second conflicts on the account and is retried (S15), then commits.
    app = App(store=store_url, clock=clock, max_concurrency=1)
    account = Account("owner")

    @app.mutation(name="acct:deposit")
    def deposit(ctx, account_id: str, cents: int) -> None:
        got: Any = ctx.repository.get(UUID(account_id))
        got.deposit(cents)
        ctx.save(got)

    try:
        app.save(account)
        first = app.scheduler.run_after(0, deposit, str(account.id), 1)
        second = app.scheduler.run_after(0, deposit, str(account.id), 10)
        clock.advance(BEHIND_MS)
        app.start()
        app.wait_until_idle()
        assert balance(app, account.id) == 1
        assert types(app, first) == ["Scheduled", "Started", "Completed"]
        assert types(app, second) == ["Scheduled", "Retried"]
        clock.advance(60_000)  # past any retry backoff
        app.wait_until_idle()
        assert balance(app, account.id) == 11
        assert state(app, second) == "success"
        assert types(app, second) == ["Scheduled", "Retried", "Started", "Completed"]
    finally:
        app.close()


def test_a_mutation_of_a_batch_reading_what_one_before_it_writes_sees_it_s13_s14(
    clock: FakeClock, store_url: str
) -> None:
    # The second mutation only reads the account. In a batch it runs before the first one's
    # commit, on the balance before it: committed together, it would record a stale read
    # (serially it comes after the deposit). Its commit conflicts instead, and it runs again.
    app = App(store=store_url, clock=clock, max_concurrency=1)
    account, seen = Account("owner"), Account("seen")

    @app.mutation(name="acct:deposit")
    def deposit(ctx) -> None:
        got: Any = ctx.repository.get(account.id)
        got.deposit(100)
        ctx.save(got)

    @app.mutation(name="acct:observe")
    def observe(ctx) -> None:
        read: Any = ctx.repository.get(account.id)  # read only, never saved
        note: Any = ctx.repository.get(seen.id)
        note.deposit(read.balance)
        ctx.save(note)

    @app.mutation(name="acct:noop")
    def noop(ctx) -> None:
        del ctx

    try:
        app.save(account, seen)
        first = app.scheduler.run_after(0, deposit)
        second = app.scheduler.run_after(1, observe)
        for _ in range(3):
            app.scheduler.run_after(2, "acct:noop")  # more of the backlog, after them
        clock.advance(BEHIND_MS + 10)
        batches = _spy_batches(app)
        app.start()
        app.wait_until_idle()
        clock.advance(60_000)  # past any retry backoff
        app.wait_until_idle()
        assert any(len(b.decided) + len(b.committing) > 1 for b in batches)  # it was a batch
        assert state(app, first) == state(app, second) == "success"
        assert balance(app, seen.id) == 100  # what it read is what its commit was checked on
        assert balance(app, account.id) == 100
    finally:
        app.close()
