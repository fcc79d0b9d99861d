"""One way to talk to either store's database: `?` placeholders, rows by column name (read side).

The view, queries and replay write their SQL once; `Db` and `Cur` adapt it to SQLite (as is) or
PostgreSQL (`%s` placeholders, tables in the store's schema via a transaction-local search_path).
"""

from __future__ import annotations

import enum
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import (
    ConnectionPoolClosedError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    PersistenceError,
)

from schedlog.events import StoreError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    import psycopg

__all__ = ["Cur", "Db", "Dialect", "bind_all"]


class Dialect(enum.StrEnum):
    """Which database a store uses."""

    SQLITE = "sqlite"
    POSTGRES = "postgres"


class Cur:
    """A cursor of either database that takes `?` placeholders."""

    __slots__ = ("_dialect", "_raw")

    def __init__(self, raw: Any, dialect: Dialect) -> None:
        # On SQLite, the driver's own cursor: eventsourcing's wrapper only passes calls on
        # (its transaction maps the driver's errors), a Python call more per statement.
        self._raw = getattr(raw, "sqlite_cursor", raw) if dialect is Dialect.SQLITE else raw
        self._dialect = dialect

    @property
    def dialect(self) -> Dialect:
        """The database this cursor's statements run on."""
        return self._dialect

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        """Run one statement."""
        if self._dialect is Dialect.POSTGRES:
            self._raw.execute(sql.replace("?", "%s"), list(params))
        else:
            self._raw.execute(sql, params)

    def executemany(self, sql: str, params: Iterable[Sequence[object]]) -> None:
        """Run one statement once for each parameter row (replay's batched writes)."""
        if self._dialect is Dialect.POSTGRES:
            self._raw.executemany(sql.replace("?", "%s"), params)
        else:
            self._raw.executemany(sql, params)

    def execute_sql(self, query: Any) -> None:
        """Run a statement psycopg composed (`psycopg.sql`), with no parameters (PostgreSQL)."""
        self._raw.execute(query)

    def run_all(self, statements: Sequence[tuple[str, Sequence[object]]]) -> list[int]:
        """Run `statements` in order; return how many rows each one changed.

        On PostgreSQL they take one round trip: bound on the client (psycopg's own quoting)
        and sent as one query string, whose results are read in turn.
        """
        if self._dialect is Dialect.SQLITE or len(statements) <= 1:
            changed = []
            for sql, params in statements:
                self.execute(sql, params)
                changed.append(self.rowcount)
            return changed
        self._raw.execute(bind_all(self._raw.connection, statements))
        changed = [self._raw.rowcount]
        while self._raw.nextset():
            changed.append(self._raw.rowcount)
        return changed

    def tuples(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run a query in this transaction; return its rows as plain tuples (cheaper to build).

        Replay reads millions of rows; a row by name costs more than the fold of its event.
        """
        if self._dialect is Dialect.POSTGRES:
            from psycopg.rows import tuple_row  # noqa: PLC0415 - see `bind_all`

            with self._raw.connection.cursor(row_factory=tuple_row) as cur:
                cur.execute(sql.replace("?", "%s"), list(params))
                return list(cur.fetchall())
        cur = self._raw.connection.cursor()
        cur.row_factory = None
        try:
            cur.execute(sql, list(params))
            return list(cur.fetchall())
        finally:
            cur.close()

    def fetchall(self) -> list[Any]:
        """Return every row left, each indexable by column name."""
        return list(self._raw.fetchall())

    def fetchone(self) -> Any:
        """Return the next row, or None."""
        return self._raw.fetchone()

    @property
    def rowcount(self) -> int:
        """Return how many rows the last INSERT, UPDATE or DELETE changed."""
        return int(self._raw.rowcount)

    def use_schema(self, schema: str | None) -> None:
        """Make the store's schema the one unqualified names resolve in (PostgreSQL)."""
        if self._dialect is Dialect.POSTGRES and schema:
            self._raw.execute(f'SET LOCAL search_path TO "{schema}"')


def bind_all(
    conn: psycopg.Connection[Any], statements: Sequence[tuple[str, Sequence[object]]]
) -> str:
    """Return `statements` (with `?` placeholders) as one PostgreSQL query string.

    The values are bound on the client, by psycopg's own quoting (`ClientCursor.mogrify`).
    """
    # Imported here, as everywhere but in pg_view: importing psycopg takes ~0.1 s, which a
    # SQLite store (each CLI command, a worker's start) need not pay.
    from psycopg import ClientCursor  # noqa: PLC0415

    binder = ClientCursor(conn)
    return "; ".join(binder.mogrify(sql.replace("?", "%s"), list(p)) for sql, p in statements)


STORE_CLOSED = "the store is closed (its App was closed)"


@contextmanager
def store_open(db: Db) -> Iterator[None]:
    """Run the block on an open store; on a closed one raise a `StoreError` saying so.

    Checked first (a pool closed by the App: psycopg's says only that it cannot be reused),
    and mapped after (eventsourcing raises `ConnectionPoolClosedError`, with no message and
    not as one of its persistence errors).
    """
    if db.closed:
        raise StoreError(STORE_CLOSED)
    try:
        yield
    except ConnectionPoolClosedError as e:
        raise StoreError(STORE_CLOSED) from e


@contextmanager
def _begin_immediate(datastore: Any) -> Iterator[Any]:
    """Yield the library's SQLite write transaction, begun with the lock (`BEGIN IMMEDIATE`).

    Its plain `BEGIN` takes the lock at the first write: a transaction that reads first (a
    replay reading the log, a catch-up reading the view's position) then fails at once with
    "database is locked" if another connection committed since its read, whatever the busy
    timeout; taking the lock up front waits for it instead.
    """
    with datastore.get_connection(commit=True) as connection:
        try:
            cursor = connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:  # "database is locked" after the lock timeout, say
            raise _as_library_error(e) from e
        try:
            yield cursor
        except BaseException as e:
            connection.rollback()
            if isinstance(e, sqlite3.Error):  # the library's cursor raises the driver's own
                raise _as_library_error(e) from e
            raise
        try:
            connection.commit()
        except sqlite3.Error as e:
            connection.rollback()
            raise _as_library_error(e) from e


def _as_library_error(error: sqlite3.Error) -> PersistenceError:
    """Return the driver's error as the library's transactions report it (`retry.classify`)."""
    if isinstance(error, sqlite3.OperationalError):
        return OperationalError(error)
    if isinstance(error, sqlite3.IntegrityError):
        return IntegrityError(error)
    if isinstance(error, sqlite3.InterfaceError):
        return InterfaceError(error)
    return PersistenceError(error)


@dataclass(frozen=True, slots=True)
class Db:
    """A store's datastore, its dialect, and where its events and their positions live."""

    datastore: Any
    dialect: Dialect
    events_table: str
    position_column: str
    schema: str | None = None

    @contextmanager
    def transaction(self, *, commit: bool) -> Iterator[Cur]:
        """Yield a cursor inside one transaction, committed if `commit`, else rolled back."""
        if commit and self.dialect is Dialect.SQLITE:
            began = _begin_immediate(self.datastore)
        else:
            began = self.datastore.transaction(commit=commit)
        try:
            with store_open(self), began as raw:
                cur = Cur(raw, self.dialect)
                cur.use_schema(self.schema)
                yield cur
        except PersistenceError as e:  # the store's or the block's statements': a SchedlogError
            raise StoreError(f"store error: {e}") from e

    @property
    def closed(self) -> bool:
        """Whether the store is closed (its connection pool, SQLite's or psycopg's, is)."""
        return bool(getattr(getattr(self.datastore, "pool", None), "closed", False))

    def cursor_of(self, raw: Any) -> Cur:
        """Wrap a cursor the event store opened (inside its own transaction)."""
        cur = Cur(raw, self.dialect)
        cur.use_schema(self.schema)
        return cur
