"""Shared fixtures: a FakeClock, a store URL per backend, an App on it, and a clean environment.

Integration tests that take `store_url` (or `app`) run on both stores: a SQLite file in
tmp_path and a fresh schema of the PostgreSQL database at SCHEDLOG_TEST_PG_DSN (default
postgresql://127.0.0.1:5432/test). PostgreSQL tests never skip: if the server cannot be reached
they fail, naming the DSN. `-m "not pg"` is a local opt-out that CI never uses.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pykka
import pytest

from schedlog import App
from schedlog.testing import FakeClock

PG_DSN = os.environ.get("SCHEDLOG_TEST_PG_DSN", "postgresql://127.0.0.1:5432/test")

# Code always passes env= explicitly; nothing from the outer environment may leak in.
for _key in list(os.environ):
    if _key.startswith(("SCHEDLOG_", "SQLITE_", "POSTGRES_")) or _key == "PERSISTENCE_MODULE":
        del os.environ[_key]

T0 = 1_800_000_000_000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that runs on PostgreSQL with `pg`."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("store_url") == "pg":
            item.add_marker(pytest.mark.pg)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(now_ms=T0)


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


def pg_url(schema: str) -> str:
    sep = "&" if "?" in PG_DSN else "?"
    return f"{PG_DSN}{sep}schema={schema}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Check the PostgreSQL server once; drop every schema the tests made at the end."""
    try:
        with psycopg.connect(PG_DSN, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        pytest.fail(f"PostgreSQL tests cannot reach {PG_DSN} (SCHEDLOG_TEST_PG_DSN): {e}")
    run = f"t_{uuid.uuid4().hex[:8]}"
    yield run
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{run}%",)
        ).fetchall()
        for (schema,) in rows:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "pg"])
def store_url(request: pytest.FixtureRequest, sqlite_path: Path) -> str:
    """A fresh store: a SQLite file, or a new schema in the test PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite://{sqlite_path}"
    run = request.getfixturevalue("pg_server")
    return pg_url(f"{run}_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def app(clock: FakeClock, store_url: str) -> Iterator[App]:
    """An App on a fresh store, not yet started; closed and all actors stopped after."""
    application = App(store=store_url, clock=clock, max_concurrency=4)
    try:
        yield application
    finally:
        application.close()
        pykka.ActorRegistry.stop_all(block=True, timeout=10)
