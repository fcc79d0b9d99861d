"""`ViewRecorder`: the events and the `_scheduled_functions` view on SQLite (read side).

Concurrent saves share one transaction (`group_commit`), retried while another process holds
the write lock; what the view keeps, and how, is `view.ViewKeeper`'s.
"""

from __future__ import annotations

import random
import sqlite3
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteApplicationRecorder,
    SQLiteCursor,
)

from schedlog.projections.group_commit import GroupCommit, Save
from schedlog.projections.reads import read_conflict, read_versions
from schedlog.projections.schema import view_ddl
from schedlog.projections.sql import Cur, Db, Dialect
from schedlog.projections.sqlite_store import FAST_BUSY_MS, StatementCachingPool
from schedlog.projections.view import SET_POSITION, VIEW_NAME, ViewKeeper, read_position
from schedlog.projections.writes import apply_changes, move_counts

if TYPE_CHECKING:
    from collections.abc import Sequence

    from schedlog.projections.rows import Change

__all__ = ["ViewRecorder"]


def _is_busy(error: BaseException) -> bool:
    """Tell whether an SQLite error means another connection holds the lock."""
    text = str(error)
    return "locked" in text or "busy" in text


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
        pool = self.datastore.pool
        if isinstance(pool, StatementCachingPool) and not pool.is_sqlite_memory_mode:
            with pool.writer_transaction() as c:  # its own connection: a warm page cache
                self._write_group(c, group)
            return
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
        elif any(map(read_versions, group)):  # each checked after the saves before it
            position = self._write_one_by_one(c, cur, group, counts)
        else:
            written, position = self._write_together(c, cur, group, counts)
            if not written:
                counts.clear()
                position = self._write_one_by_one(c, cur, group, counts)
        if position is not None:
            move_counts(cur, counts)
            cur.execute(SET_POSITION, (VIEW_NAME, position))

    def _write_one_by_one(
        self, c: SQLiteCursor, cur: Cur, group: list[Save], counts: dict[str, int]
    ) -> int | None:
        """Write a group's saves in turn, each in a savepoint; return the view's new position.

        A conflict rolls back that save only (its caller gets the error). None: no events.
        """
        position: int | None = None
        for save in group:
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
        return position

    def _write_together(
        self, c: SQLiteCursor, cur: Cur, group: list[Save], counts: dict[str, int]
    ) -> tuple[bool, int | None]:
        """Write a group's saves as one; return True and the view's new position, or False.

        Their events go in one statement and their view changes in one pass (the position is
        None if there were no events). False: one of them conflicted; nothing of it was kept,
        and the saves go `_write_one_by_one`, each in a savepoint of its own (a conflict rolls
        back that save only). Conflicts are rare (two nodes claiming one job, a cancel meeting
        a completion), and a save's own statements were most of what the group commit's leader
        did while the others waited: two savepoint statements, its events' INSERT and its view
        rows' statements per save. The events of a statement are numbered in order
        (`_insert_stored`), so each save gets its own run of ids, as one by one.
        """
        events = [event for save in group for event in save.events]
        c.execute("SAVEPOINT schedlog_group")
        try:
            ids = self._insert_stored(c, events) or []
            position: int | None = None
            changes: list[Change] = []
            start = 0
            for save in group:
                save.ids = ids[start : start + len(save.events)]
                start += len(save.events)
                if save.ids:
                    if position is None:  # read once this transaction holds the write lock
                        position = read_position(cur)
                    mine, position = self._changes_of(cur, position, save, counts)
                    changes += mine
            apply_changes(cur, changes, counts)
        except sqlite3.IntegrityError:
            c.execute("ROLLBACK TO schedlog_group")
            c.execute("RELEASE schedlog_group")
            for save in group:
                save.ids = None
            return False, None
        c.execute("RELEASE schedlog_group")
        return True, position

    def _insert(
        self, c: SQLiteCursor, cur: Cur, position: int | None, save: Save, counts: dict[str, int]
    ) -> tuple[Sequence[int] | None, int | None]:
        self._check_reads(c, save)
        ids = self._insert_stored(c, save.events, **save.kwargs)
        if ids:
            if position is None:  # read once this transaction holds the write lock
                position = read_position(cur)
            save.ids = ids
            position = self._apply_save(cur, position, save, counts)
        return ids, position

    def _check_reads(self, c: SQLiteCursor, save: Save) -> None:
        """Refuse the save (a conflict) if an aggregate its mutation read has moved on since.

        In the commit's own transaction: a write from another connection landing between this
        look and the commit makes the commit fail (SQLite's WAL snapshot: "database is locked",
        and the group commit tries it all again), so none slips in unseen. A save of no events
        (a mutation that wrote nothing) commits nothing and checks nothing.
        """
        if not save.events:
            return
        for originator_id, version in read_versions(save).items():
            key = originator_id.hex if isinstance(originator_id, UUID) else originator_id
            c.execute(
                f"SELECT 1 FROM {self.events_table_name} "  # noqa: S608
                "WHERE originator_id = ? AND originator_version = ?",
                (key, version + 1),
            )
            if c.fetchone() is not None:
                raise sqlite3.IntegrityError(read_conflict(originator_id, version))

    def _insert_stored(
        self, c: SQLiteCursor, events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Insert a save's events; return their rowids (their notification ids), in order.

        The library runs one INSERT per event, for its `lastrowid`; several go in one
        `executemany` here (a batch's jobs, a chunk's claims). Each new row's rowid is the
        table's largest plus one, so under the write lock those of one statement run on
        from the last one's.
        """
        if len(events) < 2:  # noqa: PLR2004
            return SQLiteApplicationRecorder._insert_events(self, c, events, **kwargs)  # noqa: SLF001
        raw = c.sqlite_cursor
        raw.executemany(
            self.insert_events_statement,
            [
                (
                    s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
                    s.originator_version,
                    s.topic,
                    s.state,
                )
                for s in events
            ],
        )
        (last,) = raw.execute("SELECT last_insert_rowid()").fetchone()
        return list(range(last - len(events) + 1, last + 1))

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """Read an aggregate's events: one job's, mostly (a cancel, a run, its history).

        A read of all of them, or of the last few (a claimed action's look for a cancel just
        before it is due: `JobStore.version_of`), takes the calling thread's reader connection
        (`StatementCachingPool.read`: no wait for the library pool's queue); any other goes
        the library's way.
        """
        pool = self.datastore.pool
        if gt is None and lte is None and (limit is None or desc):
            key = originator_id.hex if isinstance(originator_id, UUID) else originator_id
            order = "ORDER BY originator_version"
            if desc:
                order += " DESC" if limit is None else f" DESC LIMIT {int(limit)}"
            rows = (
                pool.read(f"{self.select_events_statement}{order}", (key,))
                if isinstance(pool, StatementCachingPool)
                else None
            )
            if rows is not None:
                return [
                    StoredEvent(
                        originator_id=self.convert_originator_id(row["originator_id"]),
                        originator_version=row["originator_version"],
                        topic=row["topic"],
                        state=row["state"],
                    )
                    for row in rows
                ]
        return super().select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)

    @property
    def db(self) -> Db:
        """The SQLite datastore, where event positions are rowids."""
        return Db(self.datastore, Dialect.SQLITE, self.events_table_name, "rowid")

    def construct_create_table_statements(self) -> list[str]:
        """Add the view's tables, indexes and triggers to the events table."""
        return [*super().construct_create_table_statements(), *view_ddl(Dialect.SQLITE)]
