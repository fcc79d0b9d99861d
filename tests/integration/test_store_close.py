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
