"""The `_scheduled_functions` view, each event applied with the view's position (read side).

The store's application recorder keeps the view: every insert of events also applies their view
changes and advances the view's position, in the same transaction, on SQLite
(`sqlite_view.ViewRecorder`) and on PostgreSQL (`pg_view.PgViewRecorder`, after the event ids
are issued under the library's table lock, so in log order). Concurrent saves share one transaction
(`group_commit`): the position is read once and written once per group. The view can therefore
never lag or diverge from the log, and a conflicting save rolls both back. Events that reached
the log some other way (a gap before this insert) are folded in first, in log order, so every
event is applied exactly once and in global order (S26).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from schedlog.events import ScheduledFunction
from schedlog.projections.rows import (
    Change,
    change_for,
    merge_changes,
)
from schedlog.projections.schema import POSITION, TABLE
from schedlog.projections.writes import (
    apply_changes,
    move_counts,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from schedlog.projections.group_commit import Save
    from schedlog.projections.sql import Cur, Db, Dialect

__all__ = [
    "JOB_TOPIC_PREFIX",
    "SET_POSITION",
    "TABLE",
    "VIEW_EVENTS",
    "VIEW_NAME",
    "ViewKeeper",
    "notification_of",
    "read_position",
]

VIEW_NAME = "_scheduled_functions_v1"
"""The view's name in the position table."""
VIEW_EVENTS = "schedlog_view_events"
"""The `save()` keyword that carries the domain events of the jobs being saved."""
JOB_TOPIC_PREFIX = get_topic(ScheduledFunction) + "."
"""Every event topic of the job aggregate starts with this; the view skips all others."""

SET_POSITION = (
    f"INSERT INTO {POSITION} (view, position) VALUES (?, ?) "  # noqa: S608
    "ON CONFLICT (view) DO UPDATE SET position = excluded.position"
)


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
            (e.originator_id, e.originator_version): e for e in save.kwargs.get(VIEW_EVENTS, ())
        }
        changes: list[Change] = []
        for stored, nid in zip(save.events, ids, strict=True):
            if not stored.topic.startswith(JOB_TOPIC_PREFIX):
                continue
            event = given.get((stored.originator_id, stored.originator_version))
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
                cur.execute(SET_POSITION, (VIEW_NAME, upto))
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
