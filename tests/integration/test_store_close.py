"""Closing an App while other threads still use its SQLite store (S30: nothing accepted is lost).

Closing a connection under a running statement crashed the process (SIGSEGV): a web process's
shutdown while a request thread scheduled, or `close` after a `stop` that left a commit thread
retrying. A connection in use is now closed by its user once its statement is done.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest

from schedlog import App
from schedlog.projections.sqlite_store import StatementCachingPool

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def _blocking(conn: Any, gate: threading.Event, entered: threading.Event) -> None:
    """Give the raw connection `conn` a SQL function that waits for `gate`."""

    def wait_here() -> int:
        entered.set()
        assert gate.wait(30)
        return 1

    conn.create_function("wait_here", 0, wait_here)


def _in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(work())
        except Exception as error:
            out.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


@pytest.mark.parametrize("via", ["reader", "writer", "library pool"])
def test_closing_while_a_statement_runs_waits_for_it_to_end(tmp_path: Path, via: str) -> None:
    app = App(store=f"sqlite://{tmp_path / 'jobs.db'}")
    pool = app.store.recorder.datastore.pool
    assert isinstance(pool, StatementCachingPool)
    gate, entered = threading.Event(), threading.Event()

    def read() -> object:
        if via == "reader":
            pool.read("SELECT 1", ())  # opens this thread's reader
            _blocking(pool._mine.conn._sqlite_conn, gate, entered)
            return pool.read("SELECT wait_here()", ())
        if via == "writer":  # the group commit's connection
            with pool.writer_transaction() as cursor:
                _blocking(cursor.sqlite_cursor.connection, gate, entered)
                cursor.execute("SELECT wait_here()")
                return cursor.fetchall()
        with app.store.recorder.datastore.transaction(commit=False) as cursor:
            _blocking(cursor.sqlite_cursor.connection, gate, entered)
            cursor.execute("SELECT wait_here()")
            return cursor.fetchall()

    thread, out = _in_thread(read)
    assert entered.wait(30)
    app.close()  # the statement is still running
    gate.set()
    thread.join(30)
    assert not thread.is_alive()
    rows = out[0]
    assert not isinstance(rows, BaseException), rows
    assert [tuple(r) for r in rows] == [(1,)]  # type: ignore[attr-defined]
    assert pool._busy == {}
    assert pool._in_use == {}
    with pytest.raises(Exception, match="closed"):
        pool.read("SELECT 1", ())


def test_nothing_opens_a_connection_after_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit thread's late retry opened a new writer after `close` (the files stayed open);
    a reader opened just as `close` ran stayed open for the thread's life."""
    app = App(store=f"sqlite://{tmp_path / 'jobs.db'}")
    pool = app.store.recorder.datastore.pool
    assert isinstance(pool, StatementCachingPool)
    opened: list[Any] = []
    create = pool._create_connection

    def closing_meanwhile() -> Any:
        conn = create()
        opened.append(conn)
        pool.close()  # lands between the reader's check and its first use
        return conn

    monkeypatch.setattr(pool, "_create_connection", closing_meanwhile)
    with pytest.raises(Exception, match="closed"):
        pool.read("SELECT 1", ())
    assert [c.closed for c in opened] == [True]
    with pytest.raises(Exception, match="closed"), pool.writer_transaction():
        pass
    assert len(opened) == 1  # no writer opened
    app.close()


def test_a_connection_given_back_after_close_is_closed_and_its_locks_freed(tmp_path: Path) -> None:
    """Given back after `close`, the library refused it ("Pool is closed") though its
    transaction had committed, and kept its writer lock."""
    app = App(store=f"sqlite://{tmp_path / 'jobs.db'}")
    datastore = app.store.recorder.datastore
    pool = datastore.pool
    with datastore.transaction(commit=True) as cursor:
        cursor.execute("CREATE TABLE t (x)")
        pool.close()
        cursor.execute("INSERT INTO t VALUES (1)")
    assert pool._in_use == {}
    assert not pool._writer_lock.locked()
    app.close()
