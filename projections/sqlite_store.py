"""The SQLite datastore: a real statement cache per connection, and one writer connection.

eventsourcing 9.5.6 opens its SQLite connections with `cached_statements=True`, which Python
takes as a cache of ONE statement: every statement of a save but the last one run is parsed
and planned again each time. A schedule ran 9 statements per save, so SQLite compiled about 8
of them per call: about 15% of a `run_at`'s time and 20% of a `cancel`'s. `SQLiteStoreFactory`
is the library's own factory with the same connections, but with a cache of `STATEMENT_CACHE`.

The library's pool hands its connections out in turn (first in, first out). In WAL mode a
connection drops its whole page cache whenever another connection has written since its last
transaction, so every group commit began on a cold cache, reading the B-tree pages of the log,
the view and its indexes again. `StatementCachingPool.writer` is one connection kept for the
group commit alone (on a file; an in-memory store keeps the library's read/write interlock).

Reading one job's events through the library's pool (take a connection, BEGIN, SELECT,
ROLLBACK, hand it back) took 0.21-0.24 ms after a write, about a fifth of a cancel; the SELECT
alone on a connection of its own, 0.15 ms.
`StatementCachingPool.read` runs such a one-statement read on a connection of the calling
thread's own, in autocommit (one statement is one consistent snapshot).

SQLite checkpoints the WAL (copies its pages into the database file, and fsyncs it) in the
commit that finds it over 1,000 pages. With `synchronous=NORMAL` that checkpoint is the only
fsync, and every ~80th save paid 6-8 ms for it (a third of all commit time, the group commit
behind it waiting): there the writer leaves it to a thread of the pool's own (`_Checkpointer`),
woken every `CHECKPOINT_EVERY` commits, on its own connection, and keeps its own
autocheckpoint only as a backstop (`WRITER_AUTOCHECKPOINT`). One `run_at` at a time: 3,767-3,802
calls/s against 3,069-3,131 (2026-12-03, interleaved). With FULL (the default) it stays in the
commit: there it was 1-2% of commit time, and a checkpoint's fsync beside the commits' own
made each commit slower (one `run_at` at a time 1,659-1,729 against 1,910-2,026 calls/s).

Every connection to a file sets `PRAGMA synchronous` itself: FULL (each commit fsynced) unless
the store's URL chose NORMAL (`SQLITE_SYNCHRONOUS`). SQLite's default in WAL mode is a build
option (`SQLITE_DEFAULT_WAL_SYNCHRONOUS`; some builds make it NORMAL), so it is never left to it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref
from contextlib import contextmanager
from typing import TYPE_CHECKING

from eventsourcing.persistence import (
    ConnectionPoolClosedError,
    InterfaceError,
    OperationalError,
    PersistenceError,
)
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteCursor,
    SQLiteFactory,
)

from schedlog.projections.sql import STORE_CLOSED

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from eventsourcing.utils import Environment, EnvType

__all__ = [
    "CHECKPOINT_EVERY",
    "FAST_BUSY_MS",
    "STATEMENT_CACHE",
    "SYNCHRONOUS_KEY",
    "SYNCHRONOUS_MODES",
    "SQLiteStoreFactory",
    "StatementCachingPool",
]

log = logging.getLogger(__name__)

_READ_ERRORS: tuple[tuple[type[sqlite3.Error], type[PersistenceError]], ...] = (
    (sqlite3.OperationalError, OperationalError),
    (sqlite3.InterfaceError, InterfaceError),
    (sqlite3.Error, PersistenceError),
)
"""How `read` reports the driver's errors: as the library's own (the runtime sorts those)."""

PAGE_SIZE = 2048
"""The page size of a new store file (SQLite's default is 4096; an existing file keeps its own).

A save touches about a dozen pages (the log, its index, the view row, its indexes, the counts;
`bench/save_costs.py` counts them); each goes to the WAL whole before the fsync, so smaller
pages make the commit cheaper: one
schedule at a time ran 9-12% faster than at 4,096 (2026-12-02). Smaller still costs more
B-tree work where one commit writes many rows: 1,024 cost the batch form 14%, 2,048 3-4%."""
STATEMENT_CACHE = 256
"""Prepared statements kept per connection (Python's default is 128; ours are ~40 distinct)."""
SYNCHRONOUS_MODES = {
    "full": "every commit is fsynced before the call returns (the default)",
    "normal": "commits survive a crash of the process, not of the machine: the WAL is fsynced "
    "at checkpoints only, so the last commits before a power loss or an OS crash may be lost",
}
"""The `PRAGMA synchronous` values a store may take (`SQLITE_SYNCHRONOUS`), and what each
keeps; full by default."""
SYNCHRONOUS_KEY = "SQLITE_SYNCHRONOUS"
"""The store's setting that chooses `PRAGMA synchronous` (`schedlog.urls` sets it from the URL)."""
CHECKPOINT_EVERY = 64
"""Commits on the writer between two wake-ups of the checkpoint thread (a save writes ~10-13
pages: about SQLite's own 1,000-page threshold)."""
WRITER_AUTOCHECKPOINT = 20_000
"""The writer's own `wal_autocheckpoint` (pages), a backstop: its commits checkpoint only if
the WAL has grown this far without the checkpoint thread (a reader holding an old snapshot
keeps both from finishing; a batch of thousands of jobs writes more pages per commit)."""
FAST_BUSY_MS = 1
"""How long the writer waits in SQLite for another process's write lock, per attempt (the group
commit retries; see `sqlite_view.ViewRecorder._commit_group`)."""


class StatementCachingPool(SQLiteConnectionPool):
    """The library's connection pool, caching statements, and the group commit's writer."""

    def __init__(
        self, *, db_name: str, lock_timeout: int | None = None, synchronous: str = "full"
    ) -> None:
        super().__init__(db_name=db_name, lock_timeout=lock_timeout)
        self._writer: SQLiteConnection | None = None
        self._writer_guard = threading.Lock()  # (the library's `_writer_lock` is its interlock)
        self._mine = threading.local()  # each thread's reader connection (`read`)
        # Held weakly: a thread that ends drops its reader with its locals (a web server's
        # request threads, say, would otherwise pile up connections until the store closes).
        self._readers: weakref.WeakSet[SQLiteConnection] = weakref.WeakSet()
        self._commits = 0
        self._busy: dict[int, SQLiteConnection] = {}
        """The writer and readers running a statement now (`_using`): `close` leaves them to
        their user, who closes them when done (closing one mid-statement crashed the process)."""
        self._shut = False
        self.checkpointer: _Checkpointer | None = None
        """Started with the writer of a file with `synchronous=NORMAL`: checkpoints off the
        commit path (see the module's docstring)."""
        if synchronous not in SYNCHRONOUS_MODES:  # (raised once `close` has all it needs)
            msg = f"synchronous must be one of {sorted(SYNCHRONOUS_MODES)}, got {synchronous!r}"
            raise ValueError(msg)
        self.synchronous = synchronous
        """Every file connection's `PRAGMA synchronous` (see the module's docstring)."""

    def writer(self) -> SQLiteConnection | None:
        """Return the connection the group commit writes on; None for an in-memory store.

        Only the group commit's leader uses it, one at a time. It waits `FAST_BUSY_MS` for
        another process's write lock per attempt.
        """
        if self.is_sqlite_memory_mode:
            return None
        with self._writer_guard:
            if self._shut:  # closed: not one more connection (a commit thread's late retry)
                raise ConnectionPoolClosedError(STORE_CLOSED)
            if self._writer is None or self._writer.closed:
                self._writer = self._create_connection()
                cursor = self._writer.cursor()
                cursor.execute(f"PRAGMA busy_timeout = {FAST_BUSY_MS}")
                if self.synchronous == "normal":  # see the module's docstring
                    cursor.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT}")
                    if self.checkpointer is None:
                        self.checkpointer = _Checkpointer(self._create_connection)
            return self._writer

    @contextmanager
    def writer_transaction(self) -> Iterator[SQLiteCursor]:
        """Yield a cursor in a transaction on the writer, committed at the end (a file store).

        If it fails, even at COMMIT (which leaves the transaction open), it is rolled back, so
        the writer is ready for the next one: it is never handed back to a pool that would.
        """
        writer = self.writer()
        if writer is None:
            msg = "an in-memory store has no writer connection: use the pool"
            raise RuntimeError(msg)
        with self._using(writer):  # the rollback below too: `close` waits for it
            try:
                with writer.transaction(commit=True) as cursor:
                    yield cursor
            except BaseException:
                raw = writer._sqlite_conn  # noqa: SLF001 - the library keeps it private
                if raw.in_transaction:
                    raw.rollback()
                raise
        self._commits += 1  # only the group commit's leader is here, one at a time
        if self._commits % CHECKPOINT_EVERY == 0 and self.checkpointer is not None:
            self.checkpointer.wake()

    def read(self, sql: str, params: Sequence[object]) -> list[sqlite3.Row] | None:
        """Run one SELECT on the calling thread's own connection; None for an in-memory store.

        The statement runs in autocommit, so it reads one consistent snapshot of what was
        committed when it began (WAL: never blocked by the writer).
        """
        if self.is_sqlite_memory_mode:
            return None
        if self.closed:  # as the pool's own connections: not one more after `close`
            raise ConnectionPoolClosedError(STORE_CLOSED)
        conn: SQLiteConnection | None = getattr(self._mine, "conn", None)
        if conn is None or conn.closed:
            conn = self._create_connection()
            with self._writer_guard:
                self._readers.add(conn)
            self._mine.conn = conn
        # As `_using`, without its lock (a read is on every job's path; the lock cost 3-4 us):
        # marked busy, then `_shut` looked at, where `close` sets `_shut`, then looks at the
        # busy ones. Under the GIL one of the two sees the other: this read does not start,
        # or `close` leaves the connection to it.
        key = id(conn)
        self._busy[key] = conn
        if self._shut:
            del self._busy[key]
            conn.close()  # this thread's own: maybe opened just as `close` ran
            raise ConnectionPoolClosedError(STORE_CLOSED)
        try:
            return conn._sqlite_conn.execute(sql, params).fetchall()  # noqa: SLF001
        except sqlite3.Error as e:
            mapped = next(ours for theirs, ours in _READ_ERRORS if isinstance(e, theirs))
            raise mapped(e) from e
        finally:
            del self._busy[key]
            if self._shut:  # closed meanwhile (another thread: mypy cannot tell)
                conn.close()  # type: ignore[unreachable]  # `close` may have left it to us

    @contextmanager
    def _using(self, conn: SQLiteConnection) -> Iterator[None]:
        """Mark `conn` busy while it runs; if the pool closed meanwhile, close it after."""
        with self._writer_guard:
            if self._shut:
                raise ConnectionPoolClosedError(STORE_CLOSED)
            self._busy[id(conn)] = conn
        try:
            yield
        finally:
            self._release(conn)

    def _release(self, conn: SQLiteConnection) -> None:
        with self._writer_guard:
            del self._busy[id(conn)]
            if self._shut:  # closed meanwhile: `close` left this one to us
                conn.close()

    def close(self) -> None:
        """Close the connections, the writer's and the readers', and stop checkpoints.

        One that another thread is using now is closed by that thread once it is done: closing
        a connection under a running statement crashed the process (SIGSEGV), for example when
        an App was closed while a request thread still read or scheduled.
        """
        with self._put_condition:
            if not self._closed:
                while self._pool:
                    self._pool.popleft().close()
                self._closed = True  # those in use are closed as they come back (below)
        if self.checkpointer is not None:
            self.checkpointer.stop()
        with self._writer_guard:
            self._shut = True  # before the busy ones are looked at: see `read`
            for conn in [self._writer, *self._readers]:
                if conn is not None and id(conn) not in self._busy:
                    conn.close()
            self._writer = None
            self._readers.clear()

    def put_connection(self, conn: SQLiteConnection) -> None:
        """Take a connection back from the library's pool users; after `close`, close it.

        The library's own `close` closed connections in use, and then refused them back.
        """
        with self._put_condition:  # (re-entrant: the library's method takes it again)
            if not self._closed:
                super().put_connection(conn)
                return
            self._in_use.pop(id(conn), None)
            is_writer, conn.is_writer = conn.is_writer, None
            conn.close()
            conn.in_use.release()
            if is_writer is True:  # as the library's put_connection does
                self._num_writers -= 1
                self._writer_lock.release()
            elif is_writer is False:
                with self._no_readers:
                    self._num_readers -= 1
                    self._no_readers.notify_all()
            self._put_condition.notify_all()  # waiters then find the pool closed

    def _get_connection(self, timeout: float = 0.0) -> SQLiteConnection:
        """Refuse a connection once the pool is closed (the library would open a new one)."""
        if self._closed:
            raise ConnectionPoolClosedError(STORE_CLOSED)
        return super()._get_connection(timeout)

    def _create_connection(self) -> SQLiteConnection:
        """Open a connection as the library does (WAL, autocommit, rows by name), caching."""
        try:
            conn = sqlite3.connect(
                database=self.db_name,
                uri=True,
                check_same_thread=False,
                isolation_level=None,  # the library issues BEGIN / COMMIT itself
                cached_statements=STATEMENT_CACHE,
                timeout=self.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT,
            )
        except (sqlite3.Error, TypeError) as e:
            raise InterfaceError(e) from e
        try:  # the first statements: a file that is no database fails here
            if not self.is_sqlite_memory_mode and not self.is_journal_mode_wal:
                conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # a new file's only: PAGE_SIZE
                (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
                if mode.lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                    self.journal_mode_was_changed_to_wal = True
                self.is_journal_mode_wal = True
            if not self.is_sqlite_memory_mode:
                conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        except sqlite3.Error as e:
            conn.close()
            raise InterfaceError(e) from e
        conn.row_factory = sqlite3.Row
        return SQLiteConnection(sqlite_conn=conn, max_age=self.max_age)


class SQLiteStoreFactory(SQLiteFactory):
    """eventsourcing's SQLite factory (`PERSISTENCE_MODULE`), with `StatementCachingPool`."""

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        library_pool = self.datastore.pool  # no connection opened yet: nothing to move over
        self.datastore.pool = StatementCachingPool(
            db_name=library_pool.db_name,
            lock_timeout=library_pool.lock_timeout,
            synchronous=self.env.get(SYNCHRONOUS_KEY) or "full",
        )
        library_pool.close()


class _Checkpointer:
    """A thread that checkpoints the WAL when woken, on a connection of its own.

    `PRAGMA wal_checkpoint(PASSIVE)`: it copies what no reader still needs and never blocks the
    writer or the readers (nor they it); what it leaves, the next one copies. Errors are left
    for the next wake-up (the writer's backstop covers a thread that never succeeds).
    """

    def __init__(self, connect: Callable[[], SQLiteConnection]) -> None:
        self._connect = connect
        self._due = threading.Event()
        self._stopping = False
        self.last: tuple[int, int, int] | None = None
        """The last one's (busy, WAL frames, frames checkpointed), as SQLite returns them."""
        self.ran = threading.Event()
        """Set after each checkpoint (for whoever waits for one)."""
        self._thread = threading.Thread(target=self._run, name="schedlog-checkpoint", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Ask for a checkpoint (it runs once, however many asked meanwhile)."""
        self._due.set()

    def stop(self, timeout_s: float = 5) -> None:
        """Stop the thread after the checkpoint under way, if any."""
        self._stopping = True
        self._due.set()
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        """Whether the thread still runs."""
        return self._thread.is_alive()

    def _run(self) -> None:
        conn: SQLiteConnection | None = None
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._stopping:
                    return
                try:
                    conn = conn or self._connect()
                    row = conn._sqlite_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()  # noqa: SLF001
                except (sqlite3.Error, PersistenceError):
                    log.debug("WAL checkpoint failed; the next one will try again", exc_info=True)
                    continue
                self.last = (int(row[0]), int(row[1]), int(row[2]))
                self.ran.set()
        finally:
            if conn is not None:
                conn.close()
