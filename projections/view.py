"""The `_scheduled_functions` table, each event applied together with its tracking row (read side).

`ViewRecorder` is the store's application recorder: every insert of events also applies their
view changes and advances the view's tracking position, in the same transaction. The view can
therefore never lag or diverge from the log, and a conflicting save rolls both back. Events that
reached the log some other way (a gap before this insert) are folded in first, in log order, so
every event is applied exactly once and in global order (S26).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import Notification, Tracking
from eventsourcing.sqlite import SQLiteCursor, SQLiteProcessRecorder
from eventsourcing.utils import get_topic

from schedlog.events import ScheduledFunction
from schedlog.projections.rows import COLUMNS, TERMINAL, Change, change_for
from schedlog.projections.schema import (
    LINKS,
    TABLE,
    count_ddl,
    index_ddl,
    links_ddl,
    table_ddl,
    trigger_ddl,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from eventsourcing.persistence import StoredEvent

__all__ = ["JOB_TOPIC_PREFIX", "TABLE", "VIEW_EVENTS", "VIEW_NAME", "ViewRecorder", "apply_change"]

VIEW_NAME = "_scheduled_functions_v1"
"""The view's name in the tracking table."""
VIEW_EVENTS = "schedlog_view_events"
"""The `save()` keyword that carries the domain events of the jobs being saved."""
JOB_TOPIC_PREFIX = get_topic(ScheduledFunction) + "."
"""Every event topic of the job aggregate starts with this; the view skips all others."""

_DDL = [
    table_ddl(TABLE),
    *index_ddl(TABLE),
    *count_ddl(),
    *trigger_ddl(TABLE),
    *links_ddl(),
]

_INSERTS: dict[str, str] = {}


def _insert_sql(table: str) -> str:
    sql = _INSERTS.get(table)
    if sql is None:
        placeholders = ", ".join("?" * len(COLUMNS))
        sql = f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({placeholders})"  # noqa: S608
        _INSERTS[table] = sql
    return sql


_NOT_TERMINAL = f"state NOT IN ({', '.join(repr(s) for s in TERMINAL)})"
_LINK = f"INSERT OR IGNORE INTO {LINKS} (parent_id, child_id, seq) VALUES (?, ?, ?)"  # noqa: S608


class ViewRecorder(SQLiteProcessRecorder):
    """Records events and tracking, and keeps `_scheduled_functions` in the same transaction."""

    decode: Callable[[Notification], object] | None = None
    """Turns a stored notification into a domain event; set by the store (used for gaps only)."""

    def construct_create_table_statements(self) -> list[str]:
        """Add the view's table and indexes to the events and tracking tables."""
        return [*super().construct_create_table_statements(), *_DDL]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        if not ids:
            return ids
        position = self._max_tracking_id(VIEW_NAME, c) or 0
        if ids[0] != position + 1:
            self._fold_notifications(c, position, ids[0] - 1)
        given = {
            (str(e.originator_id), e.originator_version): e for e in kwargs.get(VIEW_EVENTS, ())
        }
        for stored, nid in zip(stored_events, ids, strict=True):
            if not stored.topic.startswith(JOB_TOPIC_PREFIX):
                continue
            event = given.get((str(stored.originator_id), stored.originator_version))
            if event is None:  # saved without its domain event at hand: decode it
                event = self._decode(self._stored_notification(stored, nid))
            change = change_for(event, nid)
            if change is not None:
                apply_change(c, change)
        self._insert_tracking(c, Tracking(VIEW_NAME, ids[-1]))
        return ids

    def _decode(self, notification: Notification) -> object:
        if self.decode is None:
            msg = "ViewRecorder.decode is not set; the store must set it"
            raise RuntimeError(msg)
        return self.decode(notification)

    @staticmethod
    def _stored_notification(stored: StoredEvent, nid: int) -> Notification:
        return Notification(
            id=nid,
            originator_id=stored.originator_id,
            originator_version=stored.originator_version,
            topic=stored.topic,
            state=stored.state,
        )

    def _fold_notifications(self, c: SQLiteCursor, after: int, upto: int) -> None:
        """Apply the events in (after, upto] that reached the log without this recorder."""
        c.execute(
            f"SELECT rowid, * FROM {self.events_table_name} WHERE rowid > ? AND rowid <= ? "  # noqa: S608
            "ORDER BY rowid",
            (after, upto),
        )
        for row in c.fetchall():
            notification = self._notification(row)
            if not notification.topic.startswith(JOB_TOPIC_PREFIX):
                continue
            change = change_for(self._decode(notification), notification.id)
            if change is not None:
                apply_change(c, change)

    def _notification(self, row: Any) -> Notification:
        return Notification(
            id=row["rowid"],
            originator_id=self.convert_originator_id(row["originator_id"]),
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=row["state"],
        )

    def catch_up(self, batch: int = 1000) -> int:
        """Fold every event after the view's position into it; return how many were read."""
        done = 0
        while True:
            with self.datastore.transaction(commit=True) as c:
                position = self._max_tracking_id(VIEW_NAME, c) or 0
                last = self._max_notification_id(c) or 0
                upto = min(last, position + batch)
                if upto <= position:
                    return done
                self._fold_notifications(c, position, upto)
                self._insert_tracking(c, Tracking(VIEW_NAME, upto))
                done += upto - position

    def position(self) -> int:
        """Return the id of the last notification applied to the view (0 if none)."""
        return self.max_tracking_id(VIEW_NAME) or 0


def apply_change(c: SQLiteCursor, change: Change, table: str = TABLE) -> None:
    """Write one change to the view table `table` (and a new job's link to its parent)."""
    if change.insert:
        c.execute(_insert_sql(table), [change.values[col] for col in COLUMNS])
        parent = change.values["parent_id"]
        if parent is not None:
            c.execute(_LINK, (parent, change.job_id, change.values["seq"]))
        return
    if change.values:
        cols = ", ".join(f"{k} = ?" for k in change.values)
        c.execute(
            f"UPDATE {table} SET {cols} WHERE id = ?",  # noqa: S608 - column names are ours
            [*change.values.values(), change.job_id],
        )
    if change.guarded:
        cols = ", ".join(f"{k} = ?" for k in change.guarded)
        c.execute(
            f"UPDATE {table} SET {cols} WHERE id = ? AND {_NOT_TERMINAL}",  # noqa: S608
            [*change.guarded.values(), change.job_id],
        )
