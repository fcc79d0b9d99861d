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
