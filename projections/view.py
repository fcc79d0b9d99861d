"""The `_scheduled_functions` view, each event applied with the view's position (read side).

The store's application recorder keeps the view: every insert of events also applies their view
changes and advances the view's position, in the same transaction, on SQLite (`ViewRecorder`)
and on PostgreSQL (`PgViewRecorder`, after the event ids are issued under the library's table
lock, so in log order). Concurrent saves share one transaction (`group_commit`): the position is
read once and written once per group. The view can therefore never lag or
diverge from the log, and a conflicting save rolls both back. Events that reached the log some
other way (a gap before this insert) are folded in first, in log order, so every event is applied
exactly once and in global order (S26).
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError, Notification, OperationalError
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteApplicationRecorder,
    SQLiteCursor,
)
from eventsourcing.utils import get_topic
from psycopg.pq import TransactionStatus
from psycopg.sql import SQL, Composed, Identifier, Literal

from schedlog.events import ScheduledFunction
from schedlog.projections.group_commit import GroupCommit, Save
from schedlog.projections.rows import (
    Change,
    change_for,
    merge_changes,
)
from schedlog.projections.schema import POSITION, TABLE, view_ddl
from schedlog.projections.sql import Cur, Db, Dialect
from schedlog.projections.writes import (
    apply_changes,
    counts_statements,
    move_counts,
    unread_statements,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresDatastore

__all__ = [
    "JOB_TOPIC_PREFIX",
    "TABLE",
    "VIEW_EVENTS",
    "VIEW_NAME",
    "PgViewRecorder",
    "ViewKeeper",
    "ViewRecorder",
    "notification_of",
]

VIEW_NAME = "_scheduled_functions_v1"
"""The view's name in the position table."""
VIEW_EVENTS = "schedlog_view_events"
"""The `save()` keyword that carries the domain events of the jobs being saved."""
JOB_TOPIC_PREFIX = get_topic(ScheduledFunction) + "."
"""Every event topic of the job aggregate starts with this; the view skips all others."""

_SET_POSITION = (
    f"INSERT INTO {POSITION} (view, position) VALUES (?, ?) "  # noqa: S608
    "ON CONFLICT (view) DO UPDATE SET position = excluded.position"
)
_CREATE_TRIES = 3
_ONLY_OURS = (
    "SELECT 1 / (CASE WHEN (SELECT count(*) FROM {events} WHERE notification_id > "  # noqa: S608
    f"COALESCE((SELECT position FROM {POSITION} WHERE view = ?), 0)) = ? THEN 1 ELSE 0 END)"
)
_POSITION_IS_LAST = (
    f"INSERT INTO {POSITION} (view, position) "  # noqa: S608
    "SELECT ?, MAX(notification_id) FROM {events} "
    "ON CONFLICT (view) DO UPDATE SET position = excluded.position"
)
AT_ONCE_EVENTS = 64
"""At most this many events commit in one round trip: each new row then reads its `seq` from
the log, which for 1,000 jobs scheduled at once (`run_mutation`) cost 17% of their rate."""
COUNTED_IN_SQL = 2
"""Up to this many state changes in a PostgreSQL group move the counts by state themselves.

A lone claim or outcome then commits in two round trips instead of three. More would update
the counts' rows once per job: in a batch's drain that cost PostgreSQL 0.2 core and 13% of the
jobs/s; there the rows' changes are read back and the counts written once."""
FAST_BUSY_MS = 1
"""How long one attempt of a group commit waits in SQLite for another process's write lock."""


def _is_busy(error: BaseException) -> bool:
    """Tell whether an SQLite error means another connection holds the lock."""
    text = str(error)
    return "locked" in text or "busy" in text


def notification_of(row: Any, position_column: str) -> Notification:
    """Return a stored event row (of either database) as a Notification."""
    originator_id = row["originator_id"]
    return Notification(
        id=row[position_column],
        originator_id=originator_id if isinstance(originator_id, UUID) else UUID(originator_id),
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )


class ViewKeeper:
    """What both recorders share: apply a save's job events to the view, and track its position."""

    dialect: ClassVar[Dialect]
    events_table_name: str
    decode: Callable[[Notification], object] | None = None
    """Turns a stored notification into a domain event; set by the store."""

    @property
    def db(self) -> Db:
        """The view's database: the store's own."""
        raise NotImplementedError

    def _apply_save(self, cur: Cur, position: int, save: Save, counts: dict[str, int]) -> int:
        """Apply one save's job events (`save.ids` issued) after `position`; return the new one.

        How the counts by state move is added to `counts`, for the group to write once.
        """
        changes, position = self._changes_of(cur, position, save, counts)
        apply_changes(cur, changes, counts)
        return position

    def _changes_of(
        self, cur: Cur, position: int, save: Save, counts: dict[str, int]
    ) -> tuple[list[Change], int]:
        """Return one save's view changes (`save.ids` issued) and the position after them.

        Events that reached the log before them without this recorder are folded in first.
        """
        ids = save.ids
        assert ids  # noqa: S101 - the recorders call it once the events are in
        if ids[0] > position + 1:
            self._fold(cur, position, ids[0] - 1, counts)
        return self._job_changes(save, ids), ids[-1]

    def _job_changes(self, save: Save, ids: Sequence[int]) -> list[Change]:
        """Return the view changes of a save's job events, whose ids in the log are `ids`."""
        given = {
            (str(e.originator_id), e.originator_version): e
            for e in save.kwargs.get(VIEW_EVENTS, ())
        }
        changes: list[Change] = []
        for stored, nid in zip(save.events, ids, strict=True):
            if not stored.topic.startswith(JOB_TOPIC_PREFIX):
                continue
            event = given.get((str(stored.originator_id), stored.originator_version))
            if event is None:  # saved without its domain event at hand: decode it
                event = self._decode(
                    Notification(
                        id=nid,
                        originator_id=stored.originator_id,
                        originator_version=stored.originator_version,
                        topic=stored.topic,
                        state=stored.state,
                    )
                )
            change = change_for(event, nid)
            if change is not None:
                changes.append(change)
        return merge_changes(changes)

    def _decode(self, notification: Notification) -> object:
        if self.decode is None:
            msg = "the view recorder's decode is not set; the store must set it"
            raise RuntimeError(msg)
        return self.decode(notification)

    def _fold(self, cur: Cur, after: int, upto: int, counts: dict[str, int]) -> None:
        """Apply the events in (after, upto] that reached the log without this recorder."""
        pos = self.db.position_column
        cur.execute(
            f"SELECT {pos}, originator_id, originator_version, topic, state "  # noqa: S608
            f"FROM {self.events_table_name} WHERE {pos} > ? AND {pos} <= ? ORDER BY {pos}",
            (after, upto),
        )
        changes = []
        for row in cur.fetchall():
            if not row["topic"].startswith(JOB_TOPIC_PREFIX):
                continue
            notification = notification_of(row, pos)
            change = change_for(self._decode(notification), notification.id)
            if change is not None:
                changes.append(change)
        apply_changes(cur, changes, counts)

    def catch_up(self, batch: int = 1000) -> int:
        """Fold every event after the view's position into it; return how many were read."""
        done = 0
        while True:
            with self.db.transaction(commit=True) as cur:
                position, last = self._bounds(cur)
                if last > position and self._lock_log(cur):
                    position, last = self._bounds(cur)  # writers may have moved both meanwhile
                upto = min(last, position + batch)
                if upto <= position:
                    return done
                counts: dict[str, int] = {}
                self._fold(cur, position, upto, counts)
                move_counts(cur, counts)
                cur.execute(_SET_POSITION, (VIEW_NAME, upto))
                done += upto - position

    def _bounds(self, cur: Cur) -> tuple[int, int]:
        """Return the view's position and the log's last id."""
        pos = self.db.position_column
        position = read_position(cur)
        cur.execute(f"SELECT MAX({pos}) AS last FROM {self.events_table_name}")  # noqa: S608
        return position, cur.fetchone()["last"] or 0

    def _lock_log(self, cur: Cur) -> bool:
        """Keep writers out until this transaction ends; False where its snapshot does that.

        SQLite: a read transaction that then writes fails if another wrote meanwhile.
        """
        del cur
        return False

    def position(self) -> int:
        """Return the id of the last notification applied to the view (0 if none)."""
        with self.db.transaction(commit=False) as cur:
            return read_position(cur)


def read_position(cur: Cur) -> int:
    """Return the view's position in the log (0 before any event)."""
    cur.execute(f"SELECT position FROM {POSITION} WHERE view = ?", (VIEW_NAME,))  # noqa: S608
    row = cur.fetchone()
    return 0 if row is None else int(row["position"])


class ViewRecorder(SQLiteApplicationRecorder, ViewKeeper):
    """SQLite: records events, and keeps `_scheduled_functions` in the same transaction."""

    dialect = Dialect.SQLITE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._group = GroupCommit(self._commit_group)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Insert events and keep the view; concurrent saves share one commit (group commit)."""
        return self._group.insert(stored_events, kwargs)

    def _commit_group(self, group: list[Save]) -> None:
        """Commit the group; while another process holds the write lock, retry every ~0.5 ms.

        SQLite's own busy handler sleeps in growing steps (up to 100 ms), so a writer that
        keeps the lock busy (a worker draining) starves another process's short save (say a
        web process scheduling) for hundreds of milliseconds. Here it waits 1 ms in SQLite,
        then retries the whole transaction (nothing of it was kept) until the lock timeout.
        """
        pool = self.datastore.pool
        lock_timeout_s = pool.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT
        deadline = time.monotonic() + lock_timeout_s
        while True:
            try:
                self._commit_once(group, int(lock_timeout_s * 1000))
            except OperationalError as e:
                if not _is_busy(e) or time.monotonic() >= deadline:
                    raise
                for save in group:
                    save.ids = save.error = None
                time.sleep(random.uniform(0.0001, 0.0005))  # noqa: S311, TID251 - a lock wait
            else:
                return

    def _commit_once(self, group: list[Save], busy_timeout_ms: int) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"PRAGMA busy_timeout = {FAST_BUSY_MS}")
            try:
                self._write_group(c, group)
            finally:
                c.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")

    def _write_group(self, c: SQLiteCursor, group: list[Save]) -> None:
        cur = Cur(c, Dialect.SQLITE)
        position: int | None = None
        counts: dict[str, int] = {}
        if len(group) == 1:
            group[0].ids, position = self._insert(c, cur, position, group[0], counts)
        else:
            for save in group:  # each in a savepoint: a conflict rolls back that save only
                c.execute("SAVEPOINT schedlog_save")
                mine: dict[str, int] = {}
                try:
                    save.ids, position = self._insert(c, cur, position, save, mine)
                except sqlite3.IntegrityError as e:
                    c.execute("ROLLBACK TO schedlog_save")
                    save.error = IntegrityError(e)
                else:
                    for state, n in mine.items():
                        counts[state] = counts.get(state, 0) + n
                c.execute("RELEASE schedlog_save")
        if position is not None:
            move_counts(cur, counts)
            cur.execute(_SET_POSITION, (VIEW_NAME, position))

    def _insert(
        self, c: SQLiteCursor, cur: Cur, position: int | None, save: Save, counts: dict[str, int]
    ) -> tuple[Sequence[int] | None, int | None]:
        ids = SQLiteApplicationRecorder._insert_events(self, c, save.events, **save.kwargs)  # noqa: SLF001
        if ids:
            if position is None:  # read once this transaction holds the write lock
                position = read_position(cur)
            save.ids = ids
            position = self._apply_save(cur, position, save, counts)
        return ids, position

    @property
    def db(self) -> Db:
        """The SQLite datastore, where event positions are rowids."""
        return Db(self.datastore, Dialect.SQLITE, self.events_table_name, "rowid")

    def construct_create_table_statements(self) -> list[str]:
        """Add the view's tables, indexes and triggers to the events table."""
        return [*super().construct_create_table_statements(), *view_ddl(Dialect.SQLITE)]


class PgViewRecorder(PostgresApplicationRecorder, ViewKeeper):
    """PostgreSQL: records events, and keeps `_scheduled_functions` in the same transaction."""

    dialect = Dialect.POSTGRES

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self._group = GroupCommit(self._commit_group)
        schema = datastore.schema
        # What the library sends one statement at a time before an insert (the table lock,
        # then NOTIFY), with the schema and the view's position: one round trip per group.
        self._lock_and_position = SQL("; ").join(
            [
                SQL("SET LOCAL search_path TO {0}").format(Identifier(schema)),
                *self.lock_table_statements,
                SQL("NOTIFY {0}").format(Identifier(self.channel_name)),
                SQL(f"SELECT position FROM {POSITION} WHERE view = {{0}}").format(  # noqa: S608
                    Literal(VIEW_NAME)
                ),
            ]
        )
        self.sql_create_statements.extend(
            Composed([SQL(f'SET search_path TO "{schema}"; {statement}')])
            for statement in view_ddl(Dialect.POSTGRES)
        )
        self._lock_text: str | None = None
        # Nodes that start together would run this DDL at once ("tuple concurrently updated"
        # on CREATE OR REPLACE FUNCTION): the first takes a lock for the schema, the rest wait.
        self.sql_create_statements.insert(
            0,
            SQL("SELECT pg_advisory_xact_lock(hashtext({0}))").format(
                Literal(f"schedlog-ddl:{schema}")
            ),
        )

    def create_table(self) -> None:
        """Create the tables; nodes opening a fresh schema at once may race on the library's type.

        The library creates its composite type in a transaction of its own and skips only
        DuplicateObject; a node that loses the race gets a unique violation instead. Tried
        again, the type exists and is skipped (the tables' DDL is under the advisory lock).
        """
        for attempt in range(_CREATE_TRIES):
            try:
                super().create_table()
            except (IntegrityError, psycopg.errors.UniqueViolation):
                if attempt == _CREATE_TRIES - 1:
                    raise
            else:
                return

    @property
    def db(self) -> Db:
        """The PostgreSQL datastore, in its schema, where event positions are notification ids."""
        return Db(
            self.datastore,
            Dialect.POSTGRES,
            self.events_table_name,
            "notification_id",
            self.datastore.schema,
        )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Insert events and keep the view; concurrent saves share one commit (group commit).

        The library inserts in psycopg's pipeline mode; with the view's writes added, that hung
        on saves of a few MiB (seen with two 3 MiB jobs). A plain transaction does the same
        steps in the same order: the table lock, NOTIFY, the insert, the ids, then the view.
        """
        if not stored_events:
            return []
        return self._group.insert(stored_events, kwargs)

    def _commit_group(self, group: list[Save]) -> None:
        """Commit the group in one transaction; if one save conflicts, commit each on its own.

        No savepoints: each costs two round trips per save, and conflicts are rare (the work is
        spread over the nodes); a conflicting group is rolled back whole and split.
        """
        try:
            self._commit_together(group)
        except _SplitGroup:
            for save in group:
                try:
                    self._commit_together([save])
                except _SplitGroup as split:
                    save.ids, save.error = None, IntegrityError(str(split.__cause__))

    def _lock_log(self, cur: Cur) -> bool:
        """Take the writers' table lock before folding in.

        A commit landing between reading the position and reading the log's end would
        otherwise be folded in a second time (seen in CI as a duplicate view row).
        """
        cur.execute_sql(SQL("; ").join(self.lock_table_statements))
        return True

    def _commit_together(self, group: list[Save]) -> None:
        """Commit the group in one round trip if it is small, else in three, all under the lock.

        Small groups (a claim, an outcome, schedules): `_commit_at_once`. Otherwise three
        query strings, bound on the client (psycopg's quoting): BEGIN, the library's lock and
        NOTIFY, the view's position and every save's events in one INSERT; the view's rows
        (`apply_changes`, which reads what each changed); the counts by state, the position and
        COMMIT. (It was two round trips per save, one per view statement, and four more.)

        Moving the counts inside each row's UPDATE (a CTE) saved one more round trip but
        updated the counts' rows once per job instead of once per group: PostgreSQL's CPU rose
        from 0.37 to 0.58 of a core and a 1-node drain fell from about 4,800 to 4,190 jobs/s.
        """
        events = [event for save in group for event in save.events]
        rows = [
            self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
            for e in events
        ]
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            if self._lock_text is None:
                self._lock_text = self._lock_and_position.as_string(conn)
            insert = psycopg.ClientCursor(conn).mogrify(self.insert_events_statement, (rows,))
            if self._commit_at_once(group, curs, insert, len(events)):
                return
            try:
                curs.execute(f"BEGIN; {self._lock_text}; {insert}")
                row = _next_rows(curs).fetchone()
                position = 0 if row is None else int(row["position"])
                curs.nextset()
                ids = [r["notification_id"] for r in _next_rows(curs).fetchall()]
                cur = Cur(curs, Dialect.POSTGRES)  # the search_path is set for this transaction
                counts: dict[str, int] = {}
                changes: list[Change] = []
                first = 0
                for save in group:  # the ids come back in the order the events went in
                    save.ids = ids[first : first + len(save.events)]
                    first += len(save.events)
                    if save.ids:
                        mine, position = self._changes_of(cur, position, save, counts)
                        changes.extend(mine)
                rows_now = unread_statements(changes, counts, counted=COUNTED_IN_SQL)
                if rows_now is None:  # some state changes: learn which rows they changed
                    apply_changes(cur, changes, counts)
                cur.run_all(
                    [
                        *(rows_now or ()),
                        *counts_statements(counts),
                        (_SET_POSITION, (VIEW_NAME, position)),
                        ("COMMIT", ()),
                    ]
                )
            except BaseException as e:
                _roll_back(conn)
                if isinstance(e, psycopg.IntegrityError):
                    raise _SplitGroup from e
                raise

    def _commit_at_once(
        self, group: list[Save], curs: psycopg.Cursor[Any], insert: str, n_events: int
    ) -> bool:
        """Commit a small group in one round trip; False if it must take the longer way.

        Small: at most `COUNTED_IN_SQL` state changes and `AT_ONCE_EVENTS` events. The
        whole transaction is one query string, so the table lock is held for PostgreSQL's
        work alone: new rows read their `seq` from the log in their INSERT, the position is
        the log's last id, and a check fails the transaction (division by zero) if the log
        holds events after the view's position that are not the group's (they must be folded
        in first, which needs the longer way).
        """
        if n_events > AT_ONCE_EVENTS:
            return False
        counts: dict[str, int] = {}
        changes = [
            change for save in group for change in self._job_changes(save, [0] * len(save.events))
        ]
        events = self.events_table_name
        statements = unread_statements(changes, counts, counted=COUNTED_IN_SQL, seq_from=events)
        if statements is None:
            return False
        conn = curs.connection
        text = "; ".join(
            psycopg.ClientCursor(conn).mogrify(sql.replace("?", "%s"), list(params))
            for sql, params in [
                (_ONLY_OURS.format(events=events), (VIEW_NAME, n_events)),
                *statements,
                *counts_statements(counts),
                (_POSITION_IS_LAST.format(events=events), (VIEW_NAME,)),
            ]
        )
        try:
            curs.execute(f"BEGIN; {self._lock_text}; {insert}; {text}; COMMIT")
            _next_rows(curs)  # the view's position, read with the lock
            curs.nextset()
            ids = [r["notification_id"] for r in _next_rows(curs).fetchall()]
        except psycopg.errors.DivisionByZero:
            _roll_back(curs.connection)
            return False  # events to fold in first
        except BaseException as e:
            _roll_back(curs.connection)
            if isinstance(e, psycopg.IntegrityError):
                raise _SplitGroup from e
            raise
        first = 0
        for save in group:  # the ids come back in the order the events went in
            save.ids = ids[first : first + len(save.events)]
            first += len(save.events)
        return True


def _roll_back(conn: psycopg.Connection[Any]) -> None:
    """End the transaction a failed group left open (a broken connection is the pool's)."""
    if conn.info.transaction_status is not TransactionStatus.IDLE:
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")


def _next_rows(curs: psycopg.Cursor[Any]) -> psycopg.Cursor[Any]:
    """Move `curs` to the next result of its query string that has rows (a SELECT, a RETURNING)."""
    while curs.description is None:
        if not curs.nextset():
            msg = "PostgreSQL returned fewer results than the group's query string has"
            raise RuntimeError(msg)
    return curs


class _SplitGroup(Exception):  # noqa: N818 - a signal, not an error
    """A save in a PostgreSQL group conflicted: roll the group back and commit one by one."""
