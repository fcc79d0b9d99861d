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
