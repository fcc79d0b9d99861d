"""Nodes that open one new PostgreSQL schema at the same moment all start (issue: scale-out)."""

from __future__ import annotations

import multiprocessing
import uuid

import pytest

from tests.conftest import pg_url

pytestmark = [pytest.mark.process, pytest.mark.pg]


def _open(url: str) -> str:
    from schedlog import App

    try:
        App(store=url).close()
    except Exception as e:
        return repr(e)
    return "ok"


def test_nodes_opening_a_fresh_schema_at_once_all_start(pg_server: str) -> None:
    """Each process creates the schema, tables, indexes and trigger function if missing."""
    url = pg_url(f"{pg_server}_{uuid.uuid4().hex[:10]}")
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        results = pool.map(_open, [url] * 6)
    assert results == ["ok"] * 6


def test_a_node_that_loses_the_race_for_the_librarys_type_tries_again(
    pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Losing the race on the library's composite type can read "relation already exists"
    (the type is a relation); the node then creates the tables again and starts. Any other
    failure is not retried.
    """
    import psycopg
    from eventsourcing.persistence import ProgrammingError
    from eventsourcing.postgres import PostgresApplicationRecorder

    from schedlog import App, StoreError

    library_create = PostgresApplicationRecorder.create_table
    calls: list[str] = []

    def lose_once(self: PostgresApplicationRecorder) -> None:
        calls.append("create")
        if len(calls) == 1:
            library_create(self)  # the other node got there first...
            lost = psycopg.errors.DuplicateTable('relation "stored_event_uuid" already exists')
            raise ProgrammingError(str(lost)) from lost
        library_create(self)

    monkeypatch.setattr(PostgresApplicationRecorder, "create_table", lose_once)
    App(store=pg_url(f"{pg_server}_{uuid.uuid4().hex[:10]}")).close()
    assert calls == ["create", "create"]

    def fail(self: PostgresApplicationRecorder) -> None:
        del self
        calls.append("fail")
        raise ProgrammingError("permission denied for schema")

    monkeypatch.setattr(PostgresApplicationRecorder, "create_table", fail)
    with pytest.raises(StoreError, match="permission denied"):
        App(store=pg_url(f"{pg_server}_{uuid.uuid4().hex[:10]}"))
    assert calls == ["create", "create", "fail"]


def test_a_schemas_nodes_are_not_woken_by_another_schemas_writes(pg_server: str) -> None:
    """Each schema has its own NOTIFY channel: the library's is named after the table alone,
    so an idle node of one schema read its log on every write in every other schema."""
    from schedlog import App
    from schedlog.app import _channel_of
    from schedlog.store import ChangeListener

    ours = App(store=pg_url(f"{pg_server}_{uuid.uuid4().hex[:10]}"))
    theirs = App(store=pg_url(f"{pg_server}_{uuid.uuid4().hex[:10]}"))
    channel = _channel_of(ours.store.recorder)
    listener = ChangeListener(ours.store_config, channel)
    for app in (ours, theirs):
        app.action(name="jobs:noop")(lambda _ctx: None)
    try:
        assert listener.wait(0) is True  # a fresh connection: LISTEN, and look at once
        conn = listener._conn
        theirs.scheduler.run_after(60_000, "jobs:noop")
        # A marker sent after their commit by the listener itself: whatever their write
        # notified on our channel would arrive before it (in commit order), without a wait.
        conn.execute(f'NOTIFY "{channel}"')
        heard = [n.pid for n in conn.notifies(timeout=10, stop_after=1)]
        assert heard == [conn.info.backend_pid]
        ours.scheduler.run_after(60_000, "jobs:noop")
        assert listener.wait(10) is True  # our own writes still wake us
    finally:
        listener.close()
        ours.close()
        theirs.close()
