"""Replay's fast path (issue 4): stored fields instead of domain events, rows folded in memory."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest
from eventsourcing.persistence import Notification

from schedlog import App, SchedlogError
from schedlog.events import FunctionKind, Outcome, ScheduledFunction
from schedlog.projections import replay
from schedlog.projections.decode import JobEventDecoder
from schedlog.projections.rows import change_for, change_of
from schedlog.projections.schema import COUNTS, LINKS
from schedlog.testing import FakeClock
from tests.integration.helpers import execute, view_table

T0 = 1_800_000_000_000
DAY = 24 * 60 * 60 * 1000


def dump(app: App) -> tuple[Any, ...]:
    links = execute(app, f"SELECT * FROM {LINKS} ORDER BY parent_id, seq")
    counts = execute(app, f"SELECT * FROM {COUNTS} WHERE n > 0 ORDER BY state")
    return view_table(app), [dict(r) for r in links], [dict(r) for r in counts]


def schedule(n: int, *, at: int, args: list[Any], parent: str | None = None) -> ScheduledFunction:
    return ScheduledFunction.schedule(
        name=f"jobs:{n % 3}",
        kind=FunctionKind.ACTION if n % 2 else FunctionKind.MUTATION,
        args=args,
        kwargs={"k": n} if n % 4 == 0 else {},
        scheduled_time_ms=at + 10,
        creation_time_ms=at,
        parent_id=parent,
    )


@pytest.fixture
def lives(app: App) -> list[ScheduledFunction]:
    return make_lives(app)


def make_lives(app: App) -> list[ScheduledFunction]:
    """Jobs in every state, saved over several transactions as a runtime would."""
    jobs = []
    first = schedule(0, at=T0 - 3 * DAY, args=[{"_type_": "x", "_data_": 1, "more": True}])
    jobs.append(first)
    for n in range(1, 40):
        at = T0 - 3 * DAY + n * DAY // 20
        args = [n, "é ✓", {"nested": [1.5, None, {"deep": "x" * n}]}]
        jobs.append(schedule(n, at=at, args=args, parent=first.job_id if n % 5 == 0 else None))
    app.store.save(*jobs)
    for n, job in enumerate(jobs):
        at = job.scheduled_time_ms
        match n % 5:
            case 0:
                job.start("node", at, at + 30_000)
                job.complete(Outcome.SUCCESS, at + 5)
            case 1:
                job.retry(at_ms=at, error="locked", next_run_ms=at + 100)
                job.start("node", at + 100)
                job.complete(Outcome.FAILED, at + 105, "ValueError: no")
            case 2:
                job.cancel(at)
            case 3:
                job.start("node", at, at + 30_000)
                job.cancel(at + 1)
                job.complete(Outcome.SUCCESS, at + 2)  # S21: recorded, changes nothing
            case _:
                pass  # still pending
        app.store.save(job)
    return jobs


def notifications(app: App) -> list[Notification]:
    return app.store.recorder.select_notifications(start=1, limit=10_000)


def test_the_decoder_gives_the_mapper_s_change_for_every_event(
    app: App, lives: list[ScheduledFunction]
) -> None:
    decoder = JobEventDecoder(app.store.mapper)
    seen = set()
    for n in notifications(app):
        fields = decoder.decode(n.id, n.originator_id, n.originator_version, n.topic, n.state)
        assert change_of(*fields, n.id) == change_for(app.store.mapper.to_domain_event(n), n.id)
        seen.add(fields[0])
    assert len(seen) == 5  # every job event class
    assert lives


def test_the_decoder_upcasts_a_version_1_started_event(
    app: App, lives: list[ScheduledFunction]
) -> None:
    started = next(n for n in notifications(app) if n.topic.endswith(".Started"))
    state = orjson.loads(started.state)
    del state["class_version"], state["lease_until_ms"]
    v1 = Notification(
        id=started.id,
        originator_id=started.originator_id,
        originator_version=started.originator_version,
        topic=started.topic,
        state=orjson.dumps(state),
    )
    fields = JobEventDecoder(app.store.mapper).decode(
        v1.id, v1.originator_id, v1.originator_version, v1.topic, v1.state
    )
    assert fields[3]["lease_until_ms"] is None
    assert change_of(*fields, v1.id) == change_for(app.store.mapper.to_domain_event(v1), v1.id)
    assert lives


@pytest.mark.parametrize("rows_in_memory", [1, 3, 50_000])
@pytest.mark.parametrize("retention_ms", [None, DAY])
def test_a_rebuild_equals_the_live_view_whatever_it_holds_in_memory(
    clock: FakeClock,
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
    rows_in_memory: int,
    retention_ms: int | None,
) -> None:
    """Rows written early then updated by SQL, or pruned unwritten, end as on the live path."""
    monkeypatch.setattr(replay, "ROWS_IN_MEMORY", rows_in_memory)
    monkeypatch.setattr(replay, "PAGE", 7)
    app = App(store=store_url, clock=clock, retention_ms=retention_ms)
    try:
        jobs = make_lives(app)
        app.apply_retention(clock.now_ms())
        before = dump(app)
        assert app.replay() == len(notifications(app))
        assert dump(app) == before
        with app.replay(as_of=T0 - 2 * DAY) as past:
            assert past.events_applied < len(notifications(app))
        assert jobs
    finally:
        app.close()


def test_a_rebuild_waits_for_the_write_lock_while_another_connection_keeps_writing(
    clock: FakeClock, store_url: str
) -> None:
    """S27's rebuild while another process schedules: it waits its turn, it does not fail.

    SQLite's plain BEGIN took the write lock at the first write, after the rebuild's reads: a
    commit from another connection in between made it fail at once ("database is locked").
    """
    app = App(store=store_url, clock=clock, retention_ms=None)
    web = App(store=store_url, clock=clock)  # its own connections, as another process has
    for a in (app, web):
        a.action(name="jobs:noop")(lambda _ctx: None)
    stop, fed = threading.Event(), threading.Event()
    count = 0

    def feed() -> None:
        nonlocal count
        while not stop.is_set():
            web.scheduler.run_after(60_000, "jobs:noop")
            count += 1
            if count >= 20:
                fed.set()

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        assert fed.wait(30)
        for _ in range(3):
            app.replay()  # raised OperationalError("database is locked") on SQLite before
    finally:
        stop.set()
        feeder.join(30)
    try:
        assert len(view_table(app)) == count  # every job the feeder saved is in the view
        assert app.stats().counts["pending"] == count
    finally:
        web.close()
        app.close()


def test_two_rebuilds_at_once_leave_a_complete_view_s27(
    clock: FakeClock, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B folds after A swaps: they shared one scratch table, and A swapped in B's empty one.

    The view lost every row (the timer reads due jobs from it: the pending ones never ran).
    Now each has its own table; the one whose table the other's swap dropped says so.
    """
    app = App(store=store_url, clock=clock, retention_ms=None)
    other = App(store=store_url, clock=clock, retention_ms=None)
    try:
        make_lives(app)
        before = dump(app)
        b_made_its_table, a_swapped = threading.Event(), threading.Event()
        swap, fold_log = replay._swap, replay._fold_log

        def a_swaps_while_b_folds(*args: Any) -> int:
            if threading.current_thread().name != "A":
                return swap(*args)
            assert b_made_its_table.wait(10)
            applied = swap(*args)
            a_swapped.set()
            return applied

        def b_folds_around_a_swap(*args: Any) -> tuple[int, int]:
            if threading.current_thread().name == "B":
                b_made_its_table.set()
                assert a_swapped.wait(10)
            return fold_log(*args)

        monkeypatch.setattr(replay, "_swap", a_swaps_while_b_folds)
        monkeypatch.setattr(replay, "_fold_log", b_folds_around_a_swap)
        results: dict[str, object] = {}

        def run(name: str, which: App) -> None:
            try:
                results[name] = which.replay()
            except Exception as error:  # what each rebuild ended with
                results[name] = error

        threads = [
            threading.Thread(target=run, args=("A", app), name="A"),
            threading.Thread(target=run, args=("B", other), name="B"),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results["A"] == len(notifications(app))
        assert dump(app) == before  # complete, whichever swapped last
        assert isinstance(results["B"], SchedlogError)
        assert "another rebuild of the view finished" in str(results["B"])
        assert other.replay() == len(notifications(app))  # and no table left behind to trip on
        assert dump(app) == before
    finally:
        other.close()
        app.close()


def test_an_as_of_view_interrupted_or_never_closed_leaves_no_file(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc
    import tempfile
    from pathlib import Path

    make_lives(app)
    made: list[Path] = []
    mkdtemp = tempfile.mkdtemp

    def spied(*args: Any, **kwargs: Any) -> str:
        made.append(Path(mkdtemp(*args, **kwargs)))
        return str(made[-1])

    monkeypatch.setattr(tempfile, "mkdtemp", spied)

    def interrupt(read: int, total: int) -> None:
        raise KeyboardInterrupt  # what Ctrl-C does during `schedlog replay --as-of`

    with pytest.raises(KeyboardInterrupt):
        app.replay(as_of=T0, progress=interrupt)
    view = app.replay(as_of=T0)
    assert view.events_applied > 0
    assert len(made) == 2
    assert made[1].exists()
    del view
    gc.collect()
    assert not [p for p in made if p.exists()]
