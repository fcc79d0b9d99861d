"""The `_scheduled_functions` view and history: queries, pagination, exactly once (S25-S30)."""

from __future__ import annotations

import base64
import contextlib
import gc
import math
import sqlite3
import threading
import uuid
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
import pytest
from eventsourcing.persistence import OperationalError
from eventsourcing.sqlite import SQLiteApplicationRecorder

from schedlog import App, InvalidQueryError, StoreError
from schedlog.actors.retry import Fault, classify
from schedlog.events import ConflictError, FunctionKind, Outcome, ScheduledFunction
from schedlog.projections import sqlite_store
from schedlog.projections import view as view_module
from schedlog.projections.schema import POSITION, TABLE
from schedlog.projections.sql import Cur, Dialect
from schedlog.testing import FakeClock
from tests.conftest import PG_DSN, pg_url
from tests.group_commit_queue import CountingQueue
from tests.integration.helpers import (
    Account,
    execute,
    fold_of_log,
    log_position,
    state,
    view_table,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from eventsourcing.persistence import StoredEvent

T0 = 1_800_000_000_000


@pytest.fixture
def filled(app: App, clock: FakeClock) -> dict[str, list[str]]:
    @app.action(name="jobs:a")
    def a(ctx, *args: object) -> None:
        del ctx, args

    @app.mutation(name="jobs:b")
    def b(ctx, *args: object) -> None:
        del ctx, args

    ids: dict[str, list[str]] = {"a": [], "b": []}
    for i in range(7):
        ids["a"].append(app.scheduler.run_after(1_000 * (i % 3), a, i))
        ids["b"].append(app.scheduler.run_after(10_000 + i, b, i))
    app.start()
    clock.advance(1_000)
    app.wait_until_idle()
    return ids


def test_query_filters_and_order(app: App, filled: dict[str, list[str]]) -> None:
    everything = app.scheduled_functions.query(limit=1000).items
    assert len(everything) == 14
    keys = [(d["scheduledTime"], everything.index(d)) for d in everything]
    assert keys == sorted(keys)
    pending = app.scheduled_functions.query(state="pending").items
    assert {d["name"] for d in pending} == {"jobs:a", "jobs:b"}
    assert len(pending) == 2 + 7  # the two a-jobs due at +2 s, and every b-job
    by_name = app.scheduled_functions.query(name="jobs:a").items
    assert [d["_id"] for d in by_name] == [
        filled["a"][i] for i in (0, 3, 6, 1, 4, 2, 5)
    ]  # by scheduledTime, then scheduling order (S13)
    window = app.scheduled_functions.query(
        scheduled_after_ms=T0 + 1_000, scheduled_before_ms=T0 + 10_002
    ).items
    assert [d["scheduledTime"] for d in window] == [float(T0 + 1_000)] * 2 + [
        float(T0 + 2_000)
    ] * 2 + [float(T0 + 10_000), float(T0 + 10_001)]
    desc = app.scheduled_functions.query(order="desc", limit=2).items
    assert [d["_id"] for d in desc] == [filled["b"][6], filled["b"][5]]


def test_cursor_pagination_is_stable_while_jobs_are_added(
    app: App, filled: dict[str, list[str]]
) -> None:
    seen: list[str] = []
    page = app.scheduled_functions.query(limit=4)
    seen += [d["_id"] for d in page.items]
    app.scheduler.run_at(T0 - 5_000, "jobs:a", "late")  # sorts before the cursor: not listed
    while page.cursor is not None:
        page = app.scheduled_functions.query(limit=4, cursor=page.cursor)
        seen += [d["_id"] for d in page.items]
    assert len(seen) == len(set(seen)) == 14


def _cursor(scheduled_time: int, seq: int) -> str:
    """A cursor made by hand, as the view writes its own (base64 of a JSON pair)."""
    return base64.urlsafe_b64encode(orjson.dumps([scheduled_time, seq])).decode()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"state": "done"}, "state must be one of"),
        ({"order": "up"}, "order must be 'asc' or 'desc'"),
        ({"limit": 0}, "limit must be an int from 1 to 1000"),
        ({"limit": True}, "limit must be an int"),
        ({"cursor": "garbage!"}, "is not one this view returned"),
        ({"scheduled_after_ms": "soon"}, "scheduled_after_ms must be a number"),
        ({"scheduled_before_ms": math.nan}, "scheduled_before_ms must be a number"),
        ({"state": ["pending"]}, "state must be one of"),
        ({"order": []}, "order must be 'asc' or 'desc'"),
        ({"cursor": 5}, "cursor must be a str this view returned, got 5"),
        ({"cursor": _cursor(2**64 - 1, 0)}, "is not one this view returned"),
        ({"parent_id": "  "}, "parent_id must not be blank"),
        ({"parent_id": 5}, "parent_id must be a str, got int"),
    ],
)
def test_bad_queries_are_refused(app: App, kwargs, message: str) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        app.scheduled_functions.query(**kwargs)


@pytest.mark.parametrize(
    ("job_id", "message"), [("", "must not be blank"), (5, "must be a str, got int")]
)
def test_a_bad_job_id_is_refused_naming_the_problem(app: App, job_id: object, message) -> None:
    with pytest.raises(InvalidQueryError, match=f"job id {message}"):
        app.scheduled_functions.get(job_id)  # type: ignore[arg-type]


def test_times_beyond_64_bits_filter_as_the_far_past_and_future(app: App) -> None:
    app.action(name="jobs:noop")(lambda _ctx: None)
    job = app.scheduler.run_after(1_000, "jobs:noop")
    query = app.scheduled_functions.query
    assert query(scheduled_after_ms=2**70).items == []
    assert [d["_id"] for d in query(scheduled_before_ms=2**70).items] == [job]
    assert [d["_id"] for d in query(scheduled_after_ms=-(2**70)).items] == [job]
    assert app.scheduler.cancel_all(before_ms=-(2**70)) == 0
    assert app.scheduler.cancel_all(before_ms=2**70) == 1


def test_a_job_id_in_any_form_uuid_reads_finds_the_same_job_s3(app: App) -> None:
    app.action(name="jobs:child")(lambda _ctx: None)

    @app.mutation(name="jobs:parent")
    def parent(ctx) -> None:
        ctx.scheduler.run_after(60_000, "jobs:child")

    app.start()
    job = app.scheduler.run_after(0, parent)
    app.wait_until_idle()
    (child,) = app.children(job)
    for form in (job.upper(), job.replace("-", ""), "{" + job + "}", "urn:uuid:" + job):
        doc = app.scheduled_functions.get(form)
        assert doc is not None
        assert doc["_id"] == job
        assert app.children(form) == [child]
        assert [d["_id"] for d in app.scheduled_functions.query(parent_id=form).items] == [child]
        assert app.history(form) == app.history(job)
    assert app.scheduled_functions.get(job[:-1]) is None  # not an id: no job has it


def test_get_of_unknown_id_is_none(app: App) -> None:
    assert app.scheduled_functions.get("no-such-id") is None


def test_history_lists_every_event_with_its_data_s25_s29(app: App, clock: FakeClock) -> None:
    @app.action(name="io:send")
    def send(ctx, to: str) -> None:
        del ctx, to

    job = app.scheduler.run_after(30, send, "a@b.c")
    app.start()
    clock.advance(30)
    app.wait_until_idle()
    history = app.history(job)
    assert [(e["type"], e["time"], e["version"]) for e in history] == [
        ("Scheduled", float(T0), 1),
        ("Started", float(T0 + 30), 2),
        ("Completed", float(T0 + 30), 3),
    ]
    assert history[0]["name"] == "io:send"
    assert history[0]["args"] == ["a@b.c"]
    assert history[0]["scheduled_time_ms"] == T0 + 30
    assert history[0]["parent_id"] is None
    assert history[1]["node_id"] == app.node_id
    assert history[2]["outcome"] == "success"
    assert history[2]["error"] is None
    with pytest.raises(LookupError):
        app.history("unknown")


def test_view_equals_the_fold_of_the_log_and_tracks_its_position_s26(
    app: App, filled: dict[str, list[str]]
) -> None:
    assert app.store.view_recorder.position() == log_position(app)
    assert view_table(app) == fold_of_log(app)


def test_events_written_without_the_view_are_folded_in_once_s26(
    clock: FakeClock, store_url: str
) -> None:
    app = App(store=store_url, clock=clock)

    @app.action(name="jobs:a")
    def a(ctx, *args: object) -> None:
        del ctx, args

    first = app.scheduler.run_after(0, a)
    second = app.scheduler.run_after(5, a)
    app.save(Account("eve"))
    # Lose the view (as if written by an older version): the log is the truth.
    execute(app, f"DELETE FROM {TABLE}")
    execute(app, f"DELETE FROM {POSITION}")
    app.close()
    reopened = App(store=store_url, clock=clock)
    reopened.action(name="jobs:a")(a)
    try:
        assert state(reopened, first) == "pending"
        assert state(reopened, second) == "pending"
        assert reopened.store.view_recorder.position() == log_position(reopened)
        third = reopened.scheduler.run_after(0, a)  # the hook continues from the position
        reopened.start()
        clock.advance(5)
        reopened.wait_until_idle()
        assert {state(reopened, j) for j in (first, second, third)} == {"success"}
        assert len(reopened.scheduled_functions.query().items) == 3
    finally:
        reopened.close()


def test_a_commit_folds_in_events_that_reached_the_log_without_the_view_s26(app: App) -> None:
    @app.action(name="jobs:a")
    def a(ctx, *args: object) -> None:
        del ctx, args

    first = app.scheduler.run_after(0, a)
    # A job written straight to the log, past the view (as an older version would).
    other = ScheduledFunction.schedule(
        name="jobs:a",
        kind=FunctionKind.ACTION,
        args=[],
        kwargs={},
        scheduled_time_ms=T0,
        creation_time_ms=T0,
        parent_id=None,
    )
    stored = [app.store.mapper.to_stored_event(e) for e in other.collect_events()]
    library = type(app.store.recorder).__mro__[1]  # the library's own recorder
    library.insert_events(app.store.recorder, stored)
    assert app.scheduled_functions.get(other.job_id) is None
    second = app.scheduler.run_after(0, a)  # its commit folds the other job in first
    assert [state(app, j) for j in (first, other.job_id, second)] == ["pending"] * 3
    assert app.stats().counts["pending"] == 3
    assert app.store.view_recorder.position() == log_position(app)
    assert view_table(app) == fold_of_log(app)


def test_catching_up_folds_nothing_twice_while_another_app_commits_s26(
    clock: FakeClock, pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL only: on SQLite, catching up holds the write lock, so no commit can land
    # in between (the other app's save would wait for it).
    store_url = pg_url(f"{pg_server}_{uuid.uuid4().hex[:10]}")
    app = App(store=store_url, clock=clock)
    other = App(store=store_url, clock=clock)

    def a(ctx, *args: object) -> None:
        del ctx, args

    for each in (app, other):
        each.action(name="jobs:a")(a)
    try:
        first = app.scheduler.run_after(0, a)
        read = view_module.read_position
        landed: list[str] = []

        def racing(cur: Cur) -> int:
            position = read(cur)
            if not landed:  # another app commits between the position and the log's end
                landed.append(other.scheduler.run_after(0, a))
            return position

        monkeypatch.setattr(view_module, "read_position", racing)
        app.store.view_recorder.catch_up()
        monkeypatch.undo()
        assert [state(app, j) for j in (first, *landed)] == ["pending", "pending"]
        assert app.stats().counts["pending"] == 2
        assert app.store.view_recorder.position() == log_position(app)
    finally:
        other.close()
        app.close()


def test_memory_store_keeps_the_same_real_view() -> None:
    clock = FakeClock(now_ms=T0)
    app = App(store="memory://", clock=clock)

    @app.action(name="jobs:a")
    def a(ctx, *args: object) -> None:
        del ctx, args

    try:
        job = app.scheduler.run_after(0, a)
        app.start()
        app.wait_until_idle()
        assert state(app, job) == "success"
        other = App(store="memory://", clock=clock)
        try:
            assert other.scheduled_functions.get(job) is None  # each memory store is private
        finally:
            other.close()
    finally:
        app.close()


@contextlib.contextmanager
def write_lock_held(app: App, store_url: str) -> Iterator[None]:
    """Hold the store's write lock from another connection until the block ends."""
    db = app.store.db
    if db.dialect is Dialect.SQLITE:
        conn = sqlite3.connect(store_url.removeprefix("sqlite://"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with psycopg.connect(PG_DSN) as pg, pg.transaction():
        pg.execute(f'LOCK TABLE "{db.schema}".{db.events_table} IN EXCLUSIVE MODE')
        yield


def queued_saves(
    app: App, store_url: str, saves: dict[str, Callable[[], object]]
) -> dict[str, object]:
    """Run `saves` on threads queued, in order, behind a commit held by the store's lock.

    They then commit as one group; return what each returned or raised.
    """
    group = app.store.view_recorder._group
    queue = group._queue = CountingQueue()
    commit, leading = group._commit, threading.Event()

    def commit_telling(group_saves: list) -> None:
        leading.set()  # the first save leads, and waits for the store's lock
        commit(group_saves)

    group._commit = commit_telling
    results: dict[str, object] = {}

    def run(name: str, do: Callable[[], object]) -> None:
        try:
            results[name] = do()
        except Exception as error:
            results[name] = error

    threads = []
    with write_lock_held(app, store_url):
        threads.append(threading.Thread(target=run, args=("lead", lambda: app.save(Account("x")))))
        threads[0].start()
        assert leading.wait(10), "the first save did not lead"
        for n, (name, do) in enumerate(saves.items(), start=1):
            threads.append(threading.Thread(target=run, args=(name, do)))
            threads[-1].start()
            with queue.changed:
                assert queue.changed.wait_for(lambda n=n: len(queue) == n, timeout=10)
    for thread in threads:
        thread.join(10)
    group._commit = commit
    return results


def test_saves_queued_behind_a_commit_share_one_and_keep_their_own_ids_s26(
    app: App, clock: FakeClock, store_url: str
) -> None:
    @app.action(name="jobs:a")
    def a(ctx, *args: object) -> None:
        del ctx, args

    ids = [app.scheduler.run_after(1_000, a, i) for i in range(3)]
    claimed, canceled, finished = (app.load_job(i) for i in ids)
    rival = app.load_job(ids[0])  # read at the same version as `claimed`
    assert claimed
    assert canceled
    assert finished
    assert rival
    now = clock.now_ms()
    claimed.start(app.node_id, now, now + 30_000)
    canceled.cancel(now)
    finished.start(app.node_id, now, now + 30_000)
    finished.complete(Outcome.SUCCESS, now)
    results = queued_saves(
        app,
        store_url,
        {
            "claimed": lambda: app.save(claimed),
            "canceled": lambda: app.save(canceled),
            "new": lambda: app.scheduler.run_after(0, a, 99),
            "finished": lambda: app.save(finished),
        },
    )
    assert not [r for r in results.values() if isinstance(r, Exception)]
    new = results["new"]
    assert isinstance(new, str)
    # One that conflicts in a group is rolled back alone; the others commit.
    rival.cancel(now)
    again = queued_saves(
        app,
        store_url,
        {"rival": lambda: app.save(rival), "other": lambda: app.save(Account("y"))},
    )
    assert isinstance(again["rival"], ConflictError)
    assert not isinstance(again["other"], Exception)
    assert [state(app, j) for j in (*ids, new)] == [
        "inProgress",
        "canceled",
        "success",
        "pending",
    ]
    assert [e["type"] for e in app.history(ids[0])] == ["Scheduled", "Started"]
    counts = {state: n for state, n in app.stats().counts.items() if n}
    assert counts == {"inProgress": 1, "canceled": 1, "success": 1, "pending": 1}
    assert app.store.view_recorder.position() == log_position(app)
    assert view_table(app) == fold_of_log(app)


def _an_action(app: App) -> None:
    @app.action(name="jobs:a")
    def a(ctx, *args: object) -> None:
        del ctx, args


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_sqlite_a_group_without_a_conflict_is_written_as_one_save_s26(
    app: App, clock: FakeClock, store_url: str
) -> None:
    """A group's saves go as one (no savepoint each); with a conflict, one by one.

    The first group (three new jobs) runs no per-save savepoint; the second (a cancel that
    conflicts, and a user aggregate) is tried as one, rolled back whole, then run one by one:
    the conflict fails its caller alone and the other save lands.
    """
    _an_action(app)
    job = app.scheduler.run_after(1_000, "jobs:a", 0)
    rival, mover = app.load_job(job), app.load_job(job)
    assert rival
    assert mover
    writer = app.store.recorder.datastore.pool.writer()
    assert writer is not None
    statements: list[str] = []
    writer._sqlite_conn.set_trace_callback(statements.append)
    try:
        first = queued_saves(
            app,
            store_url,
            {f"new{i}": lambda i=i: app.scheduler.run_after(1_000, "jobs:a", i) for i in range(3)},
        )
        together = statements[:]
        mover.cancel(clock.now_ms())
        app.save(mover)
        rival.cancel(clock.now_ms())
        statements.clear()
        second = queued_saves(
            app,
            store_url,
            {"rival": lambda: app.save(rival), "other": lambda: app.save(Account("z"))},
        )
    finally:
        writer._sqlite_conn.set_trace_callback(None)
    new = [first.pop(f"new{i}") for i in range(3)]
    assert all(isinstance(r, str) for r in new), first
    assert first == {"lead": None}  # the save that led alone, before the group
    assert together.count("SAVEPOINT schedlog_group") == 1
    assert "SAVEPOINT schedlog_save" not in together
    assert isinstance(second["rival"], ConflictError)
    assert not isinstance(second["other"], Exception)
    assert statements.count("ROLLBACK TO schedlog_group") == 1
    assert statements.count("SAVEPOINT schedlog_save") == 2  # then each on its own
    assert [state(app, j) for j in (job, *new)] == ["canceled"] + ["pending"] * 3
    assert [e["type"] for e in app.history(job)] == ["Scheduled", "Canceled"]
    counts = {state: n for state, n in app.stats().counts.items() if n}
    assert counts == {"pending": 3, "canceled": 1}
    assert app.store.view_recorder.position() == log_position(app)
    assert view_table(app) == fold_of_log(app)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_sqlite_saves_write_on_one_connection_that_keeps_its_statements_prepared(
    app: App,
) -> None:
    """Group commits write on one connection of their own, with a real statement cache.

    The library asks for a statement cache of one (`cached_statements=True`), so each statement
    of a save but the last was compiled again on every call; and its pool hands connections out
    in turn, so each commit began on a page cache that another connection's write had dropped.
    """
    _an_action(app)

    def prepared(conn: sqlite3.Connection) -> list[str]:
        return [sql for (sql,) in conn.execute("SELECT sql FROM sqlite_stmt")]

    for _ in range(3):
        app.scheduler.cancel(app.scheduler.run_after(1_000, "jobs:a"))
    pool = app.store.recorder.datastore.pool
    writer = pool.writer()
    written = prepared(writer._sqlite_conn)
    (busy_ms,) = writer._sqlite_conn.execute("PRAGMA busy_timeout").fetchone()
    others = [prepared(conn._sqlite_conn) for conn in pool._pool]
    assert any(sql.startswith("INSERT INTO stored_events ") for sql in written), written
    assert any(sql.startswith(f"INSERT INTO {TABLE} ") for sql in written), written
    assert any(sql.startswith(f"UPDATE {TABLE} ") for sql in written), written
    assert busy_ms == 1  # it retries another process's lock itself (`_commit_group`)
    assert others  # reads (the cancels' loads) went to the pool...
    assert not any(sql.startswith("INSERT") for stmts in others for sql in stmts), others


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_sqlite_a_save_of_several_events_gets_each_ones_own_notification_id_s26(
    app: App,
) -> None:
    """Several events of one save go in one `executemany`; each still gets its own rowid."""
    _an_action(app)

    @app.mutation(name="jobs:fan_out")
    def fan_out(ctx, n: int) -> None:
        for i in range(n):
            ctx.scheduler.run_after(1_000, "jobs:a", i)

    recorder = app.store.recorder
    insert = recorder.insert_events
    returned: list[tuple[list[str], list[int]]] = []

    def spied(stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        ids = insert(stored_events, **kwargs)
        returned.append(
            ([f"{s.originator_id.hex}/{s.originator_version}" for s in stored_events], ids)
        )
        return ids

    recorder.insert_events = spied  # type: ignore[method-assign]
    app.scheduler.run_after(1_000, "jobs:a", "alone")
    app.run_mutation("jobs:fan_out", 5)
    app.run_mutation("jobs:fan_out", 3)
    rows = execute(app, "SELECT rowid, originator_id, originator_version FROM stored_events")
    by_id = {rowid: f"{oid}/{v}" for rowid, oid, v in rows}
    assert [len(events) for events, _ in returned] == [1, 5, 3]
    for events, ids in returned:
        assert [by_id[i] for i in ids] == events
    assert sorted(i for _, ids in returned for i in ids) == sorted(by_id)
    assert app.store.view_recorder.position() == log_position(app) == max(by_id)
    assert view_table(app) == fold_of_log(app)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_sqlite_a_failed_commit_leaves_the_writer_ready_for_the_next_save(
    app: App,
) -> None:
    """A COMMIT that fails leaves nothing of its save, and the writer takes the next one."""
    _an_action(app)
    writer = app.store.recorder.datastore.pool.writer()
    commit = writer.commit
    failures = []

    def failing_once() -> None:
        if not failures:
            failures.append(True)
            raise sqlite3.OperationalError("disk I/O error")
        commit()

    writer.commit = failing_once  # type: ignore[method-assign]
    with pytest.raises(StoreError, match="disk I/O error"):
        app.scheduler.run_after(1_000, "jobs:a")
    kept = app.scheduler.run_after(1_000, "jobs:a")
    ids = [d["_id"] for d in app.scheduled_functions.query(limit=10).items]
    logged = {str(e.originator_id) for e in app.store.recorder.select_notifications(1, 10)}
    assert failures
    assert ids == [kept]
    assert len(logged) == 1


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_sqlite_a_job_is_read_on_the_threads_own_connection_and_sees_every_commit(
    app: App, clock: FakeClock
) -> None:
    """Loading a job reads on the calling thread's own connection, never a stale snapshot.

    The writer commits on another connection each time; every load, from this thread and from
    another one, sees the job as last committed. A thread that ends drops its reader; closing
    the store closes the rest.
    """
    _an_action(app)
    pool = app.store.recorder.datastore.pool
    job_id = app.scheduler.run_after(1_000, "jobs:a")
    seen = [app.store.load_job(job_id)]
    clock.advance(10)
    app.scheduler.cancel(job_id)
    seen.append(app.store.load_job(job_id))
    elsewhere: list[ScheduledFunction | None] = []
    readers_then: list[int] = []

    def read_elsewhere() -> None:
        elsewhere.append(app.store.load_job(job_id))
        readers_then.append(len(pool._readers))

    reader = threading.Thread(target=read_elsewhere)
    reader.start()
    reader.join()
    gc.collect()
    states = [job.state.value if job else None for job in [*seen, *elsewhere]]
    assert states == ["pending", "canceled", "canceled"]
    assert [job.version for job in elsewhere if job] == [2]
    assert readers_then == [2]  # this thread's and the other thread's
    assert len(pool._readers) == 1  # the other thread ended: its reader went with it
    (mine,) = pool._readers
    statements = [sql for (sql,) in mine._sqlite_conn.execute("SELECT sql FROM sqlite_stmt")]
    assert any(sql.startswith("SELECT * FROM stored_events") for sql in statements)
    assert app.store.load_job(str(uuid.uuid4())) is None  # no events: no job
    app.close()
    assert mine.closed


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_sqlite_a_jobs_last_events_are_read_on_the_threads_own_connection(
    app: App, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claimed action's look for a cancel (`version_of`: the last event) reads on the calling
    thread's connection, not through the library's pool (whose queue a writer waiting for its
    lock holds up); it reads what the library's own query reads."""
    _an_action(app)
    job_id = app.scheduler.run_after(1_000, "jobs:a")
    clock.advance(1)
    app.scheduler.cancel(job_id)
    recorder = app.store.recorder
    key = uuid.UUID(job_id)
    library = SQLiteApplicationRecorder.select_events
    expected = {
        (desc, limit): library(recorder, key, desc=desc, limit=limit)
        for desc, limit in ((False, None), (True, None), (True, 1), (True, 5))
    }

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("read through the library's pool")

    monkeypatch.setattr(recorder.datastore.pool, "get_connection", no_pool)
    for (desc, limit), events in expected.items():
        assert recorder.select_events(key, desc=desc, limit=limit) == events
    assert [e.originator_version for e in expected[True, None]] == [2, 1]
    assert app.store.version_of(job_id) == 2
    with pytest.raises(AssertionError, match="library's pool"):
        recorder.select_events(key, gt=1)  # any other read goes the library's way


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_sqlite_a_failed_read_raises_the_librarys_error_which_the_runtime_retries(
    app: App,
) -> None:
    pool = app.store.recorder.datastore.pool
    with pytest.raises(OperationalError, match="no such table") as caught:
        pool.read("SELECT * FROM no_such_table", ())
    assert classify(caught.value) is Fault.TRANSIENT
    assert pool.read("SELECT 1", ()) is not None  # the connection still serves


def test_sqlite_a_new_store_file_gets_small_pages_and_an_old_one_keeps_its_own(
    tmp_path, clock: FakeClock
) -> None:
    """A new file is made with `PAGE_SIZE` pages (cheaper commits); a file made before with
    SQLite's default keeps its pages and its jobs, and takes new ones.
    """
    old_path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(old_path)) as raw:
        raw.execute("PRAGMA page_size = 4096")
        raw.execute("CREATE TABLE before_schedlog (x)")
        raw.commit()
    sizes = {}
    kept = {}
    for name in ("new", "old"):
        path = tmp_path / f"{name}.db"
        first = App(store=f"sqlite://{path}", clock=clock)
        _an_action(first)
        job_id = first.scheduler.run_after(1_000, "jobs:a")
        first.close()
        again = App(store=f"sqlite://{path}", clock=clock)
        _an_action(again)
        again.scheduler.run_after(2_000, "jobs:a")
        kept[name] = [d["_id"] for d in again.scheduled_functions.query(limit=10).items]
        again.close()
        with contextlib.closing(sqlite3.connect(path)) as raw:
            (sizes[name],) = raw.execute("PRAGMA page_size").fetchone()
            (journal,) = raw.execute("PRAGMA journal_mode").fetchone()
        assert journal == "wal"
        assert job_id in kept[name]
    assert sizes == {"new": sqlite_store.PAGE_SIZE, "old": 4096}
    assert sqlite_store.PAGE_SIZE == 2048
    assert [len(ids) for ids in kept.values()] == [2, 2]
