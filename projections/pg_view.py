"""`PgViewRecorder`: the events and the `_scheduled_functions` view on PostgreSQL (read side).

Every insert takes the library's EXCLUSIVE table lock (notification ids in commit order), so a
group commit holds it for as few round trips as it can: one for a small group, three for a
batch (see `PgViewRecorder._commit_together`). What the view keeps, and how, is `ViewKeeper`'s.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import psycopg
from eventsourcing.persistence import DataError, IntegrityError, PersistenceError
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.pq import TransactionStatus
from psycopg.sql import SQL, Composed, Identifier, Literal

from schedlog.projections.group_commit import GroupCommit, Save
from schedlog.projections.reads import READ_CONFLICT, combined_reads, read_versions
from schedlog.projections.schema import POSITION, view_ddl
from schedlog.projections.sql import Cur, Db, Dialect, bind_all
from schedlog.projections.view import SET_POSITION, VIEW_NAME, ViewKeeper
from schedlog.projections.writes import apply_changes, counts_statements, unread_statements

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from eventsourcing.persistence import StoredEvent
    from eventsourcing.postgres import PostgresDatastore

    from schedlog.projections.rows import Change

__all__ = ["AT_ONCE_EVENTS", "COUNTED_IN_SQL", "PgViewRecorder"]

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
_READS_MOVED = (
    "DO $schedlog$ BEGIN IF EXISTS (SELECT 1 FROM {events} "  # noqa: S608
    "WHERE (originator_id, originator_version) IN ({pairs})) THEN "
    f"RAISE unique_violation USING MESSAGE = '{READ_CONFLICT}: an aggregate the mutation read "
    "has changed since'; END IF; END $schedlog$"
)
"""Fails the transaction (a unique violation, as a version conflict) if an aggregate a save's
mutation read has an event past the version it read. A DO block: no result set among the
group's (`_position_and_ids` reads them in order); the values are bound into it on the client."""
AT_ONCE_EVENTS = 64
"""At most this many events commit in one round trip: each new row then reads its `seq` from
the log, which for 1,000 jobs scheduled at once (`run_mutation`) cost 17% of their rate."""
COUNTED_IN_SQL = 2
"""Up to this many state changes in a PostgreSQL group move the counts by state themselves.

A lone claim or outcome then commits in one round trip (`_commit_at_once`). More would update
the counts' rows once per job: in a batch's drain that cost PostgreSQL 0.2 core and 13% of the
jobs/s; there the rows' changes are read back and the counts written once."""


class PgViewRecorder(PostgresApplicationRecorder, ViewKeeper):
    """PostgreSQL: records events, and keeps `_scheduled_functions` in the same transaction."""

    dialect = Dialect.POSTGRES

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self._group = GroupCommit(self._commit_group)
        schema = datastore.schema
        # The library names the channel after the table alone: every schema's nodes would wake
        # on every other schema's inserts. Its insert function, which NOTIFYs the old name,
        # is not called (`insert_events` is ours); a channel name past 63 bytes is cut by
        # PostgreSQL on both sides alike.
        self.channel_name = f"{schema}.{self.events_table_name}"
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
        DuplicateObject; a node that loses the race gets a unique violation, or "relation
        already exists" (the type is a relation too), instead. Tried again, the type exists and
        is skipped (the tables' DDL is under the advisory lock).
        """
        for attempt in range(_CREATE_TRIES):
            try:
                super().create_table()
            except (PersistenceError, psycopg.Error) as error:
                if attempt == _CREATE_TRIES - 1 or not _lost_create_race(error):
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
        """Commit the group in one transaction; if one save fails it, commit each on its own.

        No savepoints: each costs two round trips per save, and conflicts are rare (the work is
        spread over the nodes); a conflicting group is rolled back whole and split.
        """
        if len(group) == 1 or _reads_independent(group):
            try:
                self._commit_together(group)
            except _SplitGroup as split:
                if len(group) == 1:
                    group[0].ids, group[0].error = None, _error_of(split)
                    return
            else:
                return
        for save in group:  # each save's reads are checked after the saves before it
            try:
                self._commit_together([save])
            except _SplitGroup as split:
                save.ids, save.error = None, _error_of(split)
            except Exception as error:  # this save's own error, not the group's
                save.ids, save.error = None, error

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
            insert = self._reads_check(conn, group) + insert
            if self._commit_at_once(group, curs, insert, len(events)):
                return
            with _rolled_back_on_error(conn):
                curs.execute(f"BEGIN; {self._lock_text}; {insert}")
                position = _position_and_ids(curs, group)
                cur = Cur(curs, Dialect.POSTGRES)  # the search_path is set for this transaction
                counts: dict[str, int] = {}
                changes: list[Change] = []
                for save in group:
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
                        (SET_POSITION, (VIEW_NAME, position)),
                        ("COMMIT", ()),
                    ]
                )

    def _reads_check(self, conn: psycopg.Connection[Any], group: list[Save]) -> str:
        """Return the check of the group's reads (`_READS_MOVED`), to run before its insert.

        Each aggregate at the earliest version a save read it at; `_reads_independent` keeps
        out of one group a save that read what a save before it writes.
        """
        reads = _group_reads(group)
        if not reads:
            return ""
        pairs = bind_all(
            conn,
            [
                (
                    ", ".join("(?::uuid, ?)" for _ in reads),
                    [value for aid, version in reads.items() for value in (str(aid), version + 1)],
                )
            ],
        )
        return _READS_MOVED.format(events=self.events_table_name, pairs=pairs) + "; "

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
        text = bind_all(
            curs.connection,
            [
                (_ONLY_OURS.format(events=events), (VIEW_NAME, n_events)),
                *statements,
                *counts_statements(counts),
                (_POSITION_IS_LAST.format(events=events), (VIEW_NAME,)),
            ],
        )
        try:
            with _rolled_back_on_error(curs.connection):
                curs.execute(f"BEGIN; {self._lock_text}; {insert}; {text}; COMMIT")
                _position_and_ids(curs, group)
        except psycopg.errors.DivisionByZero:
            return False  # events to fold in first
        return True


@contextlib.contextmanager
def _rolled_back_on_error(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """End the transaction a failed group left open; a conflict splits the group.

    A broken connection is the pool's to discard.
    """
    try:
        yield
    except BaseException as e:
        if conn.info.transaction_status is not TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        if isinstance(e, psycopg.IntegrityError) or (
            isinstance(e, psycopg.DataError)
            and not isinstance(e, psycopg.errors.DivisionByZero)  # `_commit_at_once`'s signal
        ):
            raise _SplitGroup from e  # one save's doing: the others may commit without it
        raise


def _position_and_ids(curs: psycopg.Cursor[Any], group: list[Save]) -> int:
    """Read the view's position and the events' ids; hand each save its ids; return the position.

    The ids come back in the order the events went in.
    """
    row = _next_rows(curs).fetchone()
    curs.nextset()
    ids = [r["notification_id"] for r in _next_rows(curs).fetchall()]
    first = 0
    for save in group:
        save.ids = ids[first : first + len(save.events)]
        first += len(save.events)
    return 0 if row is None else int(row["position"])


def _next_rows(curs: psycopg.Cursor[Any]) -> psycopg.Cursor[Any]:
    """Move `curs` to the next result of its query string that has rows (a SELECT, a RETURNING)."""
    while curs.description is None:
        if not curs.nextset():
            msg = "PostgreSQL returned fewer results than the group's query string has"
            raise RuntimeError(msg)
    return curs


class _SplitGroup(Exception):  # noqa: N818 - a signal, not an error
    """A save in a PostgreSQL group failed it: roll the group back, commit one by one.

    A conflict, or data PostgreSQL refused: each save then gets its own error.
    """


def _group_reads(group: list[Save]) -> dict[Any, int] | None:
    """Return the reads a group's one check covers (`combined_reads`; None: it cannot)."""
    if not any(map(read_versions, group)):  # nearly always: no save's mutation read anything
        return {}
    return combined_reads(
        (read_versions(save), (event.originator_id for event in save.events)) for save in group
    )


def _reads_independent(group: list[Save]) -> bool:
    """Tell whether one check of all the group's reads is each save's own check."""
    return _group_reads(group) is not None


def _error_of(split: _SplitGroup) -> PersistenceError:
    """Return the error of a save whose own transaction failed: a conflict, or its data."""
    cause = split.__cause__
    if isinstance(cause, psycopg.IntegrityError):
        return IntegrityError(str(cause))
    return DataError(str(cause))


def _lost_create_race(error: BaseException) -> bool:
    """Tell whether creating the library's type failed because another node created it first."""
    lost = (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable, IntegrityError)
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, lost):
            return True
        cause = cause.__cause__
    return False
