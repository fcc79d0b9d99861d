"""Leases and recovery of actions cut off by a crash, on a fake clock (S19)."""

from __future__ import annotations

import math
import threading

import pykka
import pytest

from schedlog import App, ConfigurationError
from schedlog.actors.recovery import CUT_OFF_ERROR, RecoverNow
from schedlog.testing import FakeClock
from tests.integration.helpers import execute, state, types

T0 = 1_800_000_000_000
LEASE_MS = 1_000
WAIT_S = 10


def make_app(store_url: str, clock: FakeClock) -> App:
    app = App(store=store_url, clock=clock, lease_ms=LEASE_MS)

    @app.action(name="io:send")
    def send(ctx) -> None:
        del ctx

    return app


def claim_on_a_dead_node(app: App, job_id: str, now: int) -> None:
    """What a node that crashed mid-action leaves: Started, with no heartbeat after it."""
    job = app.store.load_job(job_id)
    assert job is not None
    job.start("ghost-host:4242:dead00", now, now + LEASE_MS)
    app.save(job)


def test_an_action_cut_off_by_a_crash_fails_once_its_lease_runs_out_s19(
    clock: FakeClock, store_url: str
) -> None:
    app = make_app(store_url, clock)
    try:
        job = app.scheduler.run_after(0, "io:send")
        claim_on_a_dead_node(app, job, T0)
        app.start()
        app.wait_until_idle()
        assert state(app, job) == "inProgress"  # the lease still holds
        clock.advance(LEASE_MS + 1)
        app.wait_until_idle()
        doc = app.scheduled_functions.get(job)
        assert doc is not None
        assert doc["state"] == {"kind": "failed", "error": CUT_OFF_ERROR}
        assert types(app, job) == ["Scheduled", "Started", "Completed"]  # never run again
        assert app.history(job)[1]["node_id"] == "ghost-host:4242:dead00"
    finally:
        app.close()


def test_a_restarted_app_is_a_new_node_so_its_last_runs_claims_run_out_s19(
    clock: FakeClock, store_url: str
) -> None:
    app = make_app(store_url, clock)
    try:
        app.start()
        first = app.node_id
        job = app.scheduler.run_after(60_000, "io:send")
        left = app.store.load_job(job)  # what a function that outlasted the stop leaves
        assert left is not None
        left.start(first, T0, T0 + LEASE_MS)
        app.save(left)
        app.stop()
        app.start()
        assert app.node_id != first
        clock.advance(LEASE_MS + 1)
        app.wait_until_idle()
        doc = app.scheduled_functions.get(job)
        assert doc is not None
        assert doc["state"] == {"kind": "failed", "error": CUT_OFF_ERROR}  # not kept alive
        assert app.history(job)[1]["node_id"] == first
    finally:
        app.close()


def test_a_canceled_action_cut_off_stays_canceled(clock: FakeClock, store_url: str) -> None:
    app = make_app(store_url, clock)
    try:
        job = app.scheduler.run_after(0, "io:send")
        claim_on_a_dead_node(app, job, T0)
        app.scheduler.cancel(job)
        app.start()
        clock.advance(10 * LEASE_MS)
        app.wait_until_idle()
        assert state(app, job) == "canceled"
        assert types(app, job) == ["Scheduled", "Started", "Canceled"]
    finally:
        app.close()


def test_a_live_nodes_running_action_is_never_recovered_by_another_s19(
    clock: FakeClock, store_url: str
) -> None:
    # Both nodes can run it (on PostgreSQL either may own the job); whichever does, the
    # other's recovery must leave it alone while the runner heartbeats.
    nodes = [App(store=store_url, clock=clock, lease_ms=LEASE_MS) for _ in range(2)]
    started = threading.Event()
    release = threading.Event()

    def long_send(ctx) -> None:
        del ctx
        started.set()
        release.wait(WAIT_S)

    for node in nodes:
        node.action(name="io:send")(long_send)
    try:
        for node in nodes:
            node.start()
        job = nodes[0].scheduler.run_after(0, "io:send")
        assert started.wait(WAIT_S)
        runner_id = nodes[0].history(job)[1]["node_id"]
        runner = next(node for node in nodes if node.node_id == runner_id)
        other = next(node for node in nodes if node.node_id != runner_id)
        for _ in range(5):  # far past the first lease, with the runner heartbeating
            clock.advance(LEASE_MS)
            runner._recovery.ask(RecoverNow(), timeout=WAIT_S)  # its heartbeat, first
            other._recovery.ask(RecoverNow(), timeout=WAIT_S)
            other.wait_until_idle()
            assert state(other, job) == "inProgress"
        release.set()
        for node in nodes:
            node.wait_until_idle()
        assert state(other, job) == "success"
        assert types(other, job) == ["Scheduled", "Started", "Completed"]
    finally:
        release.set()
        for node in reversed(nodes):
            node.close()


@pytest.mark.parametrize("timeout_s", [30, 0])
def test_a_node_that_stops_cleanly_forgets_its_heartbeat(
    clock: FakeClock, store_url: str, timeout_s: float
) -> None:
    app = make_app(store_url, clock)
    try:
        app.start()
        clock.advance(LEASE_MS)
        app.wait_until_idle()
        assert [r["node_id"] for r in execute(app, "SELECT node_id FROM schedlog_nodes_v1")] == [
            app.node_id
        ]
        app.stop(timeout_s=timeout_s)  # 0: nothing runs, so nothing is cut off (--grace 0)
        assert execute(app, "SELECT node_id FROM schedlog_nodes_v1") == []
        assert pykka.ActorRegistry.get_by_class_name("RecoveryActor") == []
        assert pykka.ActorRegistry.get_by_class_name("TimerActor") == []
    finally:
        app.close()


@pytest.mark.parametrize("timeout_s", ["10", -1, math.nan, math.inf, True])
def test_a_bad_stop_timeout_is_refused_and_the_runtime_keeps_running(
    clock: FakeClock, store_url: str, timeout_s: object
) -> None:
    app = make_app(store_url, clock)
    try:
        app.start()
        with pytest.raises(ConfigurationError, match="timeout_s must be"):
            app.stop(timeout_s=timeout_s)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="timeout_s must be"):
            app.wait_until_idle(timeout_s=timeout_s)  # type: ignore[arg-type]
        ran: list[str] = []
        app.action(name="jobs:after")(lambda ctx: ran.append(ctx.job_id))
        job = app.scheduler.run_after(0, "jobs:after")
        app.wait_until_idle()
        assert ran == [job]  # still running: nothing was half stopped
    finally:
        app.close()


def test_lease_must_be_sensible() -> None:
    with pytest.raises(ValueError, match="lease_ms"):
        App(store="memory://", lease_ms=5)
