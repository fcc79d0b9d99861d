"""A SQLite store's durability setting: FULL unless its URL opts into NORMAL (S11).

S11: a job scheduled from application code is durable when the call returns. On a SQLite file
that holds only if every commit is fsynced (`PRAGMA synchronous=FULL` in WAL mode), which
SQLite's build may not make the default; `?synchronous=normal` trades it for speed (commits
survive a crash of the process, not of the machine) and only when the URL says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from schedlog import App, SchedlogError
from schedlog.projections import sqlite_store
from schedlog.projections.sqlite_store import StatementCachingPool

if TYPE_CHECKING:
    from pathlib import Path

FULL, NORMAL = 2, 1  # what `PRAGMA synchronous` reads back


def _levels(app: App) -> set[int]:
    """Return `PRAGMA synchronous` as each kind of connection the store opened reads it."""
    pool = app.store.recorder.datastore.pool
    assert isinstance(pool, StatementCachingPool)
    writer = pool.writer()
    assert writer is not None
    with app.store.recorder.datastore.transaction(commit=False) as c:  # the library's pool
        c.execute("PRAGMA synchronous")
        pooled = c.fetchone()[0]
    rows = pool.read("PRAGMA synchronous", ())  # this thread's reader
    assert rows is not None
    (group,) = writer._sqlite_conn.execute("PRAGMA synchronous").fetchone()
    return {group, pooled, rows[0][0]}


def _noop(app: App) -> None:
    @app.action(name="jobs:noop")
    def noop(ctx, index: int) -> None:
        del ctx, index


def test_every_connection_fsyncs_each_commit_by_default_s11(tmp_path: Path) -> None:
    app = App(store=f"sqlite://{tmp_path / 'full.db'}")
    try:
        _noop(app)
        app.scheduler.run_after(60_000, "jobs:noop", 1)
        assert _levels(app) == {FULL}
    finally:
        app.close()


def test_synchronous_normal_is_an_opt_in_of_the_url_and_not_kept_by_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "normal.db"
    app = App(store=f"sqlite://{path}?synchronous=NORMAL&lock_timeout=5")  # any case
    try:
        _noop(app)
        job_id = app.scheduler.run_after(60_000, "jobs:noop", 1)
        assert _levels(app) == {NORMAL}
        assert app.scheduled_functions.get(job_id)["state"]["kind"] == "pending"
    finally:
        app.close()
    again = App(store=f"sqlite://{path}")  # the same file, opened without the option
    try:
        assert _levels(again) == {FULL}
        assert again.scheduled_functions.get(job_id)["state"]["kind"] == "pending"
    finally:
        again.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("synchronous=off", "synchronous must be 'full' or 'normal', got 'off'"),
        ("synchronous=", "synchronous must be 'full' or 'normal', got ''"),
        ("sync=normal", "unknown option 'sync' \\(known: lock_timeout, synchronous\\)"),
    ],
)
def test_a_bad_synchronous_option_is_refused_by_name(
    tmp_path: Path, query: str, message: str
) -> None:
    path = tmp_path / "bad.db"
    with pytest.raises(SchedlogError, match=message):
        App(store=f"sqlite://{path}?{query}")
    assert not path.exists()  # refused before the file was made


def test_the_pool_refuses_a_level_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="synchronous must be one of \\['full', 'normal'\\]"):
        StatementCachingPool(db_name="x.db", synchronous="off")


def _writer_autocheckpoint(app: App) -> int:
    pool = app.store.recorder.datastore.pool
    assert isinstance(pool, StatementCachingPool)
    writer = pool.writer()
    assert writer is not None
    (pages,) = writer._sqlite_conn.execute("PRAGMA wal_autocheckpoint").fetchone()
    return int(pages)


def test_with_normal_the_wal_is_checkpointed_by_a_thread_not_by_the_commits(
    tmp_path: Path,
) -> None:
    """With NORMAL a checkpoint is the one fsync left, so the commits do not wait for it."""
    app = App(store=f"sqlite://{tmp_path / 'normal.db'}?synchronous=normal")
    pool = app.store.recorder.datastore.pool
    assert isinstance(pool, StatementCachingPool)
    try:
        _noop(app)
        assert _writer_autocheckpoint(app) == sqlite_store.WRITER_AUTOCHECKPOINT  # a backstop
        checkpointer = pool.checkpointer
        assert checkpointer is not None
        assert not checkpointer.ran.is_set()
        for i in range(sqlite_store.CHECKPOINT_EVERY):
            app.scheduler.run_after(60_000, "jobs:noop", i)
        assert checkpointer.ran.wait(10), "no checkpoint after CHECKPOINT_EVERY commits"
        assert checkpointer.last is not None
        busy, frames, copied = checkpointer.last
        assert (busy, copied) == (0, frames)  # no reader held it back: all of the WAL copied
        assert frames >= sqlite_store.CHECKPOINT_EVERY  # every commit wrote at least a page
    finally:
        app.close()
    assert not checkpointer.alive  # closing the store stops it


def test_with_full_the_commits_checkpoint_as_sqlite_does(tmp_path: Path) -> None:
    """With FULL a checkpoint's fsync beside the commits' own slowed them: none is started."""
    app = App(store=f"sqlite://{tmp_path / 'full.db'}")
    pool = app.store.recorder.datastore.pool
    assert isinstance(pool, StatementCachingPool)
    try:
        _noop(app)
        for i in range(sqlite_store.CHECKPOINT_EVERY):
            app.scheduler.run_after(60_000, "jobs:noop", i)
        assert _writer_autocheckpoint(app) == 1000  # SQLite's default
        assert pool.checkpointer is None
    finally:
        app.close()
