"""Cancel: pending, in progress, races with a mutation's commit, idempotence, cancel_all (S20-S24)."""

from __future__ import annotations

import threading

import pytest

from schedlog import App, JobNotFoundError
from schedlog.projections.schema import TABLE
from schedlog.testing import FakeClock
from tests.integration.helpers import Account, balance, state, types

T0 = 1_800_000_000_000
WAIT_S = 10


def test_canceled_pending_job_never_runs_s20(app: App, clock: FakeClock) -> None:
    ran: list[str] = []

    @app.action(name="jobs:run")
    def run(ctx) -> None:
        ran.append(ctx.job_id)

    job = app.scheduler.run_after(1_000, run)
    app.start()
    clock.advance(500)
    app.scheduler.cancel(job)
    doc = app.scheduled_functions.get(job)
    assert doc is not None
    assert doc["state"] == {"kind": "canceled"}
    assert doc["completedTime"] == float(T0 + 500)
    clock.advance(1_000)
    app.wait_until_idle()
    assert ran == []
    assert types(app, job) == ["Scheduled", "Canceled"]


def test_canceling_a_running_action_s21(app: App) -> None:
    started = threading.Event()
    release = threading.Event()
    children: list[str] = []

    @app.action(name="io:long")
    def long(ctx) -> None:
        started.set()
        release.wait(WAIT_S)
        children.append(ctx.scheduler.run_after(0, "io:child"))

    @app.action(name="io:child")
    def child(ctx) -> None:
        del ctx

    job = app.scheduler.run_after(0, long)
    app.start()
    assert started.wait(WAIT_S)
    app.scheduler.cancel(job)
    assert state(app, job) == "canceled"
    release.set()
    app.wait_until_idle()
    doc = app.scheduled_functions.get(job)
    assert doc is not None
    assert doc["state"] == {"kind": "canceled"}  # its later completion changes nothing
    assert types(app, job) == ["Scheduled", "Started", "Canceled", "Completed"]
    assert app.history(job)[-1]["outcome"] == "success"  # kept for the audit
    (child_id,) = children
    assert state(app, child_id) == "canceled"  # born canceled
    assert types(app, child_id) == ["Scheduled", "Canceled"]


def test_cancel_landing_before_a_mutation_commit_wins_s22(app: App) -> None:
    account = Account("dee")
    app.save(account)
    job_ids: list[str] = []

    @app.mutation(name="bank:deposit")
    def deposit(ctx) -> None:
        acc = ctx.repository.get(account.id)
        acc.deposit(10)
        ctx.save(acc)
        ctx.scheduler.run_after(0, "bank:deposit")
        app.scheduler.cancel(ctx.job_id)  # another writer cancels while the mutation runs

    job_ids.append(app.scheduler.run_after(0, deposit))
    app.start()
    app.wait_until_idle()
    (job,) = job_ids
    assert state(app, job) == "canceled"
    assert types(app, job) == ["Scheduled", "Canceled"]  # the mutation's commit conflicted
    assert balance(app, account.id) == 0
    assert len(app.scheduled_functions.query(name="bank:deposit").items) == 1


def test_cancel_after_a_mutation_committed_is_a_no_op_s22_s23(app: App) -> None:
    @app.mutation(name="jobs:m")
    def m(ctx) -> None:
        del ctx

    job = app.scheduler.run_after(0, m)
    app.start()
    app.wait_until_idle()
    app.scheduler.cancel(job)
    app.scheduler.cancel(job)
    assert state(app, job) == "success"
    assert types(app, job) == ["Scheduled", "Started", "Completed"]


def test_cancel_is_idempotent_and_unknown_ids_are_errors_s23(app: App) -> None:
    @app.action(name="jobs:a")
    def a(ctx) -> None:
        del ctx

    job = app.scheduler.run_after(1_000, a)
    app.scheduler.cancel(job)
    app.scheduler.cancel(job)
    assert types(app, job) == ["Scheduled", "Canceled"]
    with pytest.raises(JobNotFoundError, match="no scheduled function with id 'nope'"):
        app.scheduler.cancel("nope")
    with pytest.raises(JobNotFoundError):
        app.scheduler.cancel("6b2a5a5e-5d9f-4a61-8f0e-9a1a4a2d1c11")
    account = Account("not a job")
    app.save(account)
    with pytest.raises(JobNotFoundError):
        app.scheduler.cancel(str(account.id))


@pytest.mark.parametrize("spelling", [str, str.upper], ids=["as_given", "upper_case"])
def test_a_mutation_cannot_cancel_itself_s23(app: App, spelling) -> None:
    @app.mutation(name="jobs:self")
    def self_cancel(ctx) -> None:
        ctx.scheduler.cancel(spelling(ctx.job_id))  # any spelling uuid.UUID reads is its id

    job = app.scheduler.run_after(0, self_cancel)
    app.start()
    app.wait_until_idle()
    doc = app.scheduled_functions.get(job)
    assert doc is not None
    assert doc["state"]["kind"] == "failed"
    assert "a mutation cannot cancel itself" in doc["state"]["error"]


def test_a_mutation_cancels_others_atomically_s22(app: App) -> None:
    @app.action(name="jobs:target")
    def target(ctx) -> None:
        del ctx

    @app.mutation(name="jobs:canceler")
    def canceler(ctx, victim: str, fail: bool) -> None:
        ctx.scheduler.cancel(victim)
        staged = ctx.scheduler.run_after(5_000, target)
        ctx.scheduler.cancel(staged)  # a job it scheduled itself: born canceled
        if fail:
            msg = "abort"
            raise ValueError(msg)

    kept = app.scheduler.run_after(10_000, target)
    dropped = app.scheduler.run_after(10_000, target)
    app.scheduler.run_after(0, canceler, kept, True)
    app.scheduler.run_after(0, canceler, dropped, False)
    app.start()
    app.wait_until_idle()
    assert state(app, kept) == "pending"  # the failed mutation's cancel was dropped
    assert state(app, dropped) == "canceled"
    born = [
        d
        for d in app.scheduled_functions.query(name="jobs:target").items
        if d["_id"] not in {kept, dropped}
    ]
    assert [d["state"]["kind"] for d in born] == ["canceled"]


def test_cancel_all_with_filters_s24(app: App, clock: FakeClock) -> None:
    @app.action(name="jobs:a")
    def a(ctx) -> None:
        del ctx

    @app.action(name="jobs:b")
    def b(ctx) -> None:
        del ctx

    early_a = app.scheduler.run_after(100, a)
    late_a = app.scheduler.run_after(5_000, a)
    early_b = app.scheduler.run_after(100, b)
    done_b = app.scheduler.run_after(0, b)
    app.start()
    app.wait_until_idle()
    assert state(app, done_b) == "success"
    assert app.scheduler.cancel_all(name=a, before_ms=T0 + 1_000) == 1
    assert state(app, early_a) == "canceled"
    assert state(app, late_a) == "pending"
    assert app.scheduler.cancel_all() == 2
    assert {state(app, j) for j in (late_a, early_b)} == {"canceled"}
    assert state(app, done_b) == "success"
    clock.advance(10_000)
    app.wait_until_idle()
    assert app.scheduler.cancel_all() == 0


def test_a_cancel_landing_just_before_an_action_claim_keeps_it_from_running_s22(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from schedlog.events import ScheduledFunction

    ran: list[str] = []

    @app.action(name="io:send")
    def send(ctx) -> None:
        ran.append(ctx.job_id)

    original = app.store.save
    raced: list[str] = []

    def cancel_first(*objs, **kwargs):
        events = [e for o in objs if isinstance(o, ScheduledFunction) for e in o.pending_events]
        claim = next((e for e in events if isinstance(e, ScheduledFunction.Started)), None)
        if claim is not None and not raced:
            raced.append(str(claim.originator_id))
            app.scheduler.cancel(str(claim.originator_id))  # lands between load and claim
        return original(*objs, **kwargs)

    monkeypatch.setattr(app.store, "save", cancel_first)
    job = app.scheduler.run_after(0, send)
    app.start()
    app.wait_until_idle()
    assert raced == [job]
    assert ran == []  # the claim conflicted: the action never started
    assert types(app, job) == ["Scheduled", "Canceled"]


def test_a_cancel_landing_just_after_an_action_claim_follows_s21_s22(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from schedlog.events import ScheduledFunction

    ran: list[str] = []

    @app.action(name="io:send")
    def send(ctx) -> None:
        ran.append(ctx.job_id)

    original = app.store.save

    def cancel_after(*objs, **kwargs):
        events = [e for o in objs if isinstance(o, ScheduledFunction) for e in o.pending_events]
        result = original(*objs, **kwargs)
        claim = next((e for e in events if isinstance(e, ScheduledFunction.Started)), None)
        if claim is not None:
            app.scheduler.cancel(str(claim.originator_id))
        return result

    monkeypatch.setattr(app.store, "save", cancel_after)
    job = app.scheduler.run_after(0, send)
    app.start()
    app.wait_until_idle()
    assert ran == [job]  # it had started: it runs, and ends canceled
    assert state(app, job) == "canceled"
    assert types(app, job) == ["Scheduled", "Started", "Canceled", "Completed"]
    # The outcome left the row canceled (its guard failed), and still moved its version on.
    with app.store.db.transaction(commit=False) as cur:
        assert cur.tuples(f"SELECT version FROM {TABLE} WHERE id = ?", [job]) == [(4,)]
    counts = app.stats().counts
    assert (counts["canceled"], counts["inProgress"], counts["success"]) == (1, 0, 0)


def test_jobs_a_canceled_action_schedules_through_run_mutation_are_born_canceled_s21(
    app: App,
) -> None:
    started, release = threading.Event(), threading.Event()
    children: dict[str, str] = {}

    @app.action(name="jobs:child")
    def child(ctx) -> None:
        del ctx

    @app.mutation(name="jobs:schedule_child")
    def schedule_child(ctx) -> str:
        return ctx.scheduler.run_after(60_000, "jobs:child")

    @app.action(name="jobs:long")
    def long(ctx) -> None:
        started.set()
        assert release.wait(10)
        children["direct"] = ctx.scheduler.run_after(60_000, "jobs:child")
        children["via_mutation"] = ctx.run_mutation(schedule_child)

    job = app.scheduler.run_after(0, long)
    with app:
        assert started.wait(10)
        app.scheduler.cancel(job)
        release.set()
        app.wait_until_idle()
    assert state(app, job) == "canceled"
    for how, child_id in children.items():
        assert types(app, child_id) == ["Scheduled", "Canceled"], how
        assert child_id in app.children(job)


def test_a_cancel_landing_between_the_parent_read_and_the_child_save_s21(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child was saved pending, after the parent's `Canceled` in the log."""
    children: list[str] = []
    raced: list[str] = []
    load_job = app.store.load_job

    @app.action(name="jobs:child")
    def child(ctx) -> None:
        del ctx

    @app.action(name="jobs:parent")
    def parent(ctx) -> None:
        def load_then_cancel(job_id: str) -> object:
            job = load_job(job_id)
            if job_id == ctx.job_id and not raced:
                raced.append(job_id)
                app.scheduler.cancel(job_id)  # lands right after the read
            return job

        monkeypatch.setattr(app.store, "load_job", load_then_cancel)
        children.append(ctx.scheduler.run_after(60_000, "jobs:child"))

    job = app.scheduler.run_after(0, parent)
    with app:
        app.wait_until_idle()
    assert raced == [job]
    assert state(app, job) == "canceled"
    assert types(app, children[0]) == ["Scheduled", "Canceled"]


def test_a_mutation_s_cancel_is_stamped_when_made_not_at_its_frozen_now_s27_s29(
    clock: FakeClock, store_url: str
) -> None:
    """X started at +100 while the mutation (frozen at +0) ran; its cancel said +0.

    X's history went back in time, and a replay as of +25 showed it canceled while pending.
    """
    app = App(store=store_url, clock=clock, max_concurrency=2)
    x_running, x_release, m_saved = threading.Event(), threading.Event(), threading.Event()

    @app.action(name="jobs:x")
    def x(ctx) -> None:
        x_running.set()
        assert x_release.wait(10)

    @app.mutation(name="jobs:m")
    def m(ctx, victim: str) -> None:
        clock.advance(100)  # time passes while it runs: X comes due and starts
        assert x_running.wait(10)
        ctx.scheduler.cancel(victim)

    victim = app.scheduler.run_after(50, x)
    mutation = app.scheduler.run_after(0, m, victim)
    save = app.save

    def spied(*objs: object, **kwargs: object) -> None:
        save(*objs, **kwargs)
        if any(getattr(o, "job_id", None) == mutation for o in objs):
            m_saved.set()

    app.save = spied  # type: ignore[method-assign]
    try:
        app.start()
        assert m_saved.wait(10)
        x_release.set()
        app.wait_until_idle()
        assert state(app, mutation) == "success"
        history = app.history(victim)
        assert [e["type"] for e in history] == ["Scheduled", "Started", "Canceled", "Completed"]
        times = [e["time"] for e in history]
        assert times == sorted(times)
        with app.replay(as_of=T0 + 25) as past:
            doc = past.get(victim)
            assert doc is not None
            assert doc["state"]["kind"] == "pending"
    finally:
        app.close()


def test_bad_ids_and_filters_are_named_in_the_error_s23_s24(app: App) -> None:
    """A UUID object said "no scheduled function" of a job that exists; None said 'None'."""
    import uuid

    from schedlog import SchedlogError

    @app.action(name="jobs:a")
    def a(ctx) -> None:
        del ctx

    job = app.scheduler.run_after(1_000, a)
    for bad, shown in ((uuid.UUID(job), "UUID"), (None, "NoneType"), ("  ", "'  '")):
        with pytest.raises(
            SchedlogError, match=f"job_id must be a job's id \\(a str\\), got {shown}"
        ):
            app.scheduler.cancel(bad)  # type: ignore[arg-type]
        with pytest.raises(SchedlogError, match="job id must"):
            app.history(bad)  # type: ignore[arg-type]
        with pytest.raises(SchedlogError, match="job id must"):
            app.children(bad)  # type: ignore[arg-type]
    with pytest.raises(SchedlogError, match="before_ms must be a number of ms, got 'x'"):
        app.scheduler.cancel_all(before_ms="x")  # type: ignore[arg-type]
    with pytest.raises(SchedlogError, match="before_ms must be a number of ms, got nan"):
        app.scheduler.cancel_all(before_ms=float("nan"))
    with pytest.raises(SchedlogError, match="name must be a function's registered name"):
        app.scheduler.cancel_all(name=123)
    assert state(app, job) == "pending"  # nothing canceled by any of them
