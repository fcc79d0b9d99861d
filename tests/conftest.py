"""Shared fixtures: a FakeClock, an App on a SQLite file in tmp_path, and a clean environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest

from schedlog import App
from schedlog.testing import FakeClock

# Code always passes env= explicitly; nothing from the outer environment may leak in.
for _key in list(os.environ):
    if _key.startswith(("SCHEDLOG_", "SQLITE_", "POSTGRES_")) or _key == "PERSISTENCE_MODULE":
        del os.environ[_key]

T0 = 1_800_000_000_000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(now_ms=T0)


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def app(clock: FakeClock, sqlite_path: Path) -> Iterator[App]:
    """An App on a fresh SQLite file, not yet started; closed and all actors stopped after."""
    application = App(store=f"sqlite://{sqlite_path}", clock=clock, max_concurrency=4)
    try:
        yield application
    finally:
        application.close()
        pykka.ActorRegistry.stop_all(block=True, timeout=10)
