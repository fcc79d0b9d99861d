"""Replay, views as of an instant, retention, stats and links (S27-S29)."""

from __future__ import annotations

from typing import Any

import pytest

from schedlog import App, SchedlogError
from schedlog.projections.schema import TABLE
from schedlog.testing import FakeClock
from tests.integration.helpers import execute, state, view_table

T0 = 1_800_000_000_000
DAY = 24 * 60 * 60 * 1000


def table(app: App) -> dict[str, dict[str, Any]]:
    return view_table(app)


def snapshot(view: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = view.query(limit=1000)
    items += page.items
    while page.cursor is not None:
        page = view.query(limit=1000, cursor=page.cursor)
        items += page.items
    return items


@pytest.fixture
def busy(app: App, clock: FakeClock) -> dict[str, str]:
    """A store with every kind of history: success, failure, cancel, children, pending."""

    @app.mutation(name="jobs:parent")
    def parent(ctx) -> None:
        ctx.scheduler.run_after(1_000, "jobs:child", 1)
        ctx.scheduler.run_after(2_000, "jobs:child", 2)

    @app.action(name="jobs:child")
    def child(ctx, n: int) -> None:
        if n == 2:
            msg = "child two fails"
            raise RuntimeError(msg)

    ids = {
        "parent": app.scheduler.run_after(100, parent),
        "canceled": app.scheduler.run_after(500, child, 0),
        "later": app.scheduler.run_after(DAY, child, 3),
    }
    app.scheduler.cancel(ids["canceled"])
    app.start()
    for step in (100, 1_000, 1_000):
        clock.advance(step)
        app.wait_until_idle()
    return ids


def test_replay_rebuilds_exactly_the_live_view_s27(app: App, busy: dict[str, str]) -> None:
    before = table(app)
    docs_before = snapshot(app.scheduled_functions)
    stats_before = app.stats()
    applied = app.replay()
    assert applied == sum(len(app.history(job_id)) for job_id in before)
    assert table(app) == before
    assert snapshot(app.scheduled_functions) == docs_before
    assert app.stats() == stats_before
    again = app.scheduler.run_after(0, "jobs:child", 1)  # the live path goes on after the swap
    app.wait_until_idle()
    assert state(app, again) == "success"
    assert app.stats().counts["success"] == stats_before.counts["success"] + 1


def test_replay_as_of_a_past_instant_leaves_the_live_view_alone_s27(
    app: App, clock: FakeClock, busy: dict[str, str]
) -> None:
    live = snapshot(app.scheduled_functions)
    with app.replay(as_of=T0 + 100) as past:
        docs = {d["_id"]: d for d in snapshot(past)}
        assert docs[busy["parent"]]["state"] == {"kind": "success"}
        assert docs[busy["canceled"]]["state"] == {"kind": "canceled"}
        children = [d for d in docs.values() if d["name"] == "jobs:child" and d["args"] != [0]]
        assert sorted(d["args"][0] for d in children) == [1, 2, 3]
        assert {d["_id"]: d["state"]["kind"] for d in children if d["args"] != [3]} == {
            d["_id"]: "pending" for d in children if d["args"] != [3]
        }  # at T0+100 the children were born, none had run
        assert past.get(busy["later"])["state"] == {"kind": "pending"}  # type: ignore[index]
    with app.replay(as_of=T0 - 1) as before_anything:
        assert snapshot(before_anything) == []
    assert snapshot(app.scheduled_functions) == live


def test_progress_is_reported_per_page(app: App, busy: dict[str, str]) -> None:
    seen: list[tuple[int, int]] = []
    app.replay(progress=lambda done, total: seen.append((done, total)))
    assert seen
    assert seen[-1][0] == seen[-1][1] > 0


def test_retention_removes_finished_jobs_from_the_view_not_the_log_s28(
    app: App, clock: FakeClock, busy: dict[str, str]
) -> None:
    parent = busy["parent"]
    history = app.history(parent)
    children = app.children(parent)
    assert len(children) == 2
    clock.advance(7 * DAY - 3_000)
    app.wait_until_idle()
    assert app.scheduled_functions.get(parent) is not None  # not yet 7 days since completion
    clock.advance(1_000)
    app.wait_until_idle()
    assert app.scheduled_functions.get(parent) is None  # left the view...
    assert app.history(parent) == history  # ...but its history stays
    assert app.children(parent) == children  # and so do its links
    assert app.scheduled_functions.get(busy["later"]) is not None  # ran after a day: kept
    counts = app.stats().counts
    assert sum(counts.values()) == len(snapshot(app.scheduled_functions))
    live = table(app)
    app.replay()  # a rebuild applies the same retention
    assert table(app) == live


def test_stats_counts_lag_and_health(app: App, clock: FakeClock) -> None:
    @app.action(name="jobs:a")
    def a(ctx) -> None:
        del ctx

    for delay in (0, 0, 50_000):
        app.scheduler.run_after(delay, a)
    stats = app.stats()
    assert stats.counts["pending"] == 3
    assert (stats.lag_ms, stats.running, stats.health) == (0, 0, "healthy")
    clock.advance(30_000)  # nothing runs: the runtime is not started
    assert (app.stats().lag_ms, app.stats().health) == (30_000, "warning")
    clock.advance(300_000)
    assert app.stats().health == "error"
    app.start()
    app.wait_until_idle()
    stats = app.stats()
    assert stats.counts["success"] == 3
    assert stats.counts["pending"] == 0
    assert stats.lag_ms == 0


def test_query_by_parent_and_children(app: App, busy: dict[str, str]) -> None:
    parent = busy["parent"]
    docs = app.scheduled_functions.query(parent_id=parent).items
    assert [d["_id"] for d in docs] == app.children(parent)
    assert [d["args"] for d in docs] == [[1], [2]]
    assert app.scheduled_functions.query(parent_id=busy["canceled"]).items == []
    assert app.history(docs[0]["_id"])[0]["parent_id"] == parent


def _counts_match_rows(app: App) -> dict[str, int]:
    rows = execute(app, f"SELECT state, COUNT(*) AS n FROM {TABLE} GROUP BY state")
    by_rows = {r["state"]: r["n"] for r in rows}
    counts = {k: n for k, n in app.stats().counts.items() if n}
    assert counts == by_rows
    return counts


def test_stats_counts_follow_every_transition_s27_s28(app: App, clock: FakeClock) -> None:
    """The counts by state move with each change the rows see: inserts, claims, completions,
    cancels of pending, running and just-born jobs, a completion after a cancel, retention."""

    @app.action(name="c:self_cancel")
    def self_cancel(ctx) -> None:
        app.scheduler.cancel(ctx.job_id)  # running -> canceled; its completion changes nothing

    @app.action(name="c:boom")
    def boom(ctx) -> None:
        del ctx
        msg = "boom"
        raise RuntimeError(msg)

    @app.mutation(name="c:parent")
    def parent(ctx) -> None:
        born = ctx.scheduler.run_after(0, boom)
        ctx.scheduler.cancel(born)  # inserted and canceled in one save
        ctx.scheduler.run_after(1_000, boom)

    @app.mutation(name="c:fails")
    def fails(ctx) -> None:
        del ctx
        msg = "no"
        raise ValueError(msg)

    ids = [app.scheduler.run_after(100, fn) for fn in (self_cancel, boom, parent, fails)]
    app.scheduler.cancel(app.scheduler.run_after(100, boom))
    app.run_mutation(parent)
    assert _counts_match_rows(app) == {"pending": 5, "canceled": 2}
    app.start()
    clock.advance(100)
    app.wait_until_idle()
    assert state(app, ids[0]) == "canceled"
    assert _counts_match_rows(app) == {"pending": 2, "canceled": 4, "failed": 2, "success": 1}
    clock.advance(1_000)
    app.wait_until_idle()
    assert _counts_match_rows(app) == {"canceled": 4, "failed": 4, "success": 1}
    clock.advance(8 * DAY)
    app.wait_until_idle()
    assert _counts_match_rows(app) == {}  # retention's deletes take them off


def test_a_store_with_the_old_count_triggers_drops_them_on_open(
    sqlite_path: Any, clock: FakeClock
) -> None:
    """Stores made before counts moved out of row triggers: reopened, nothing counts twice."""
    url = f"sqlite://{sqlite_path}"
    first = App(store=url, clock=clock)
    bump = (
        "INSERT INTO schedlog_state_counts_v1 (state, n) VALUES (NEW.state, 1) "
        "ON CONFLICT (state) DO UPDATE SET n = schedlog_state_counts_v1.n + 1"
    )
    execute(first, f"CREATE TRIGGER {TABLE}_count_insert AFTER INSERT ON {TABLE} BEGIN {bump}; END")
    first.action(name="c:a")(lambda _ctx: None)
    first.scheduler.run_after(0, "c:a")
    assert first.stats().counts["pending"] == 2  # the old trigger and the writer, both
    first.close()
    again = App(store=url, clock=clock)
    try:
        execute(again, "UPDATE schedlog_state_counts_v1 SET n = 1 WHERE state = 'pending'")
        again.action(name="c:a")(lambda _ctx: None)
        again.scheduler.run_after(0, "c:a")
        assert _counts_match_rows(again) == {"pending": 2}
        triggers = execute(again, "SELECT name FROM sqlite_master WHERE type = 'trigger'")
        assert [t["name"] for t in triggers] == [f"{TABLE}_count_delete"]
    finally:
        again.close()


@pytest.mark.parametrize(
    ("as_of", "message"),
    [
        ("noon", "as_of must be epoch milliseconds \\(int\\)"),
        (True, "as_of must be epoch milliseconds \\(int\\)"),
        (2**70, "as_of must be epoch milliseconds within"),
        (-(2**70), "as_of must be epoch milliseconds within"),
    ],
)
def test_replay_as_of_a_time_out_of_range_is_refused(app: App, as_of: object, message) -> None:
    with pytest.raises(SchedlogError, match=message):
        app.replay(as_of=as_of)  # type: ignore[call-overload]
