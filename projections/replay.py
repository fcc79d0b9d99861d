"""Rebuilds the view from the log, and builds views as of a past instant (S27, S28).

Both read the log in pages, in global order, with constant memory, and run each event through
the same pure `change_for` the live path uses. `rebuild` fills a table beside the live view,
then swaps it in inside one short write transaction that first folds whatever was appended
meanwhile; `build_as_of` fills a separate database that only holds the view.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from eventsourcing.persistence import Notification
from eventsourcing.sqlite import SQLiteCursor, SQLiteDatastore

from schedlog.events import ScheduledFunction
from schedlog.projections.queries import ScheduledFunctions
from schedlog.projections.rows import change_for
from schedlog.projections.schema import (
    COUNTS,
    TABLE,
    TERMINAL_SQL,
    index_ddl,
    links_ddl,
    table_ddl,
    trigger_ddl,
)
from schedlog.projections.view import JOB_TOPIC_PREFIX, VIEW_NAME, ViewRecorder, apply_change

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["AsOfView", "build_as_of", "event_time", "prune", "rebuild"]

PAGE = 2_000
_REBUILD = TABLE + "_rebuild"


def event_time(event: object) -> int | None:
    """Return an event's domain time in ms (when it happened, by the App's clock)."""
    if isinstance(event, ScheduledFunction.Scheduled):
        return event.creation_time_ms
    at = getattr(event, "at_ms", None)
    return at if isinstance(at, int) else None


def prune(c: SQLiteCursor, table: str, before_ms: int, limit: int) -> int:
    """Delete up to `limit` terminal rows completed at or before `before_ms` (S28); count them."""
    c.execute(
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "  # noqa: S608
        f"WHERE state IN ({TERMINAL_SQL}) AND completed_time <= ? LIMIT ?)",
        (before_ms, limit),
    )
    c.execute("SELECT changes()")
    return int(c.fetchone()[0])


def _page(recorder: ViewRecorder, c: SQLiteCursor, after: int, upto: int | None) -> list[Any]:
    bound = "" if upto is None else " AND rowid <= ?"
    c.execute(
        f"SELECT rowid, * FROM {recorder.events_table_name} WHERE rowid > ?{bound} "  # noqa: S608
        "ORDER BY rowid LIMIT ?",
        (after, *(() if upto is None else (upto,)), PAGE),
    )
    return list(c.fetchall())


def _fold(
    rows: list[Any],
    decode: Callable[[Notification], object],
    apply: Callable[[object, int], None],
) -> int:
    applied = 0
    for row in rows:
        if not row["topic"].startswith(JOB_TOPIC_PREFIX):
            continue
        notification = Notification(
            id=row["rowid"],
            originator_id=row["originator_id"],
            originator_version=row["originator_version"],
            topic=row["topic"],
            state=row["state"],
        )
        apply(decode(notification), notification.id)
        applied += 1
    return applied


def rebuild(
    recorder: ViewRecorder,
    decode: Callable[[Notification], object],
    *,
    retain_after_ms: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Drop and rebuild the live view from the log; return how many job events it applied."""
    with recorder.datastore.transaction(commit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {_REBUILD}")
        c.execute(table_ddl(_REBUILD))
        total = recorder._max_notification_id(c) or 0  # noqa: SLF001
    position, applied = 0, 0
    while True:  # 1. page through the log, one short transaction per page
        with recorder.datastore.transaction(commit=True) as c:
            rows = _page(recorder, c, position, None)
            if not rows:
                break
            applied += _fold(rows, decode, _applier(c))
            position = rows[-1]["rowid"]
        if progress is not None:
            progress(position, max(total, position))
    return applied + _swap(recorder, decode, position, retain_after_ms)


def _applier(c: SQLiteCursor) -> Callable[[object, int], None]:
    def apply(event: object, seq: int) -> None:
        change = change_for(event, seq)
        if change is not None:
            apply_change(c, change, _REBUILD)

    return apply


def _swap(
    recorder: ViewRecorder,
    decode: Callable[[Notification], object],
    position: int,
    retain_after_ms: int | None,
) -> int:
    applied = 0
    with recorder.datastore.transaction(commit=True) as c:
        # 2. One write transaction: what was appended meanwhile, retention, then the swap.
        while rows := _page(recorder, c, position, None):
            applied += _fold(rows, decode, _applier(c))
            position = rows[-1]["rowid"]
        if retain_after_ms is not None:
            while prune(c, _REBUILD, retain_after_ms, 10_000):
                pass
        c.execute(f"DROP TABLE {TABLE}")
        c.execute(f"ALTER TABLE {_REBUILD} RENAME TO {TABLE}")
        for statement in [*index_ddl(TABLE), *trigger_ddl(TABLE)]:
            c.execute(statement)
        c.execute(f"DELETE FROM {COUNTS}")  # noqa: S608
        c.execute(
            f"INSERT INTO {COUNTS} (state, n) SELECT state, COUNT(*) FROM {TABLE} GROUP BY state"  # noqa: S608
        )
        c.execute(
            "UPDATE tracking SET notification_id = ? WHERE application_name = ?",
            (position, VIEW_NAME),
        )
    return applied


class AsOfView(ScheduledFunctions):
    """A read-only view of `_scheduled_functions` as it stood at `as_of_ms` (same get/query).

    It lives in a temporary file of its own; `close()` (or leaving a `with` block) deletes it.
    """

    def __init__(self, datastore: SQLiteDatastore, as_of_ms: int, applied: int, path: Path) -> None:
        super().__init__(datastore, TABLE, counted=False)
        self.as_of_ms = as_of_ms
        self.events_applied = applied
        self.path = path
        self._owned = datastore

    def close(self) -> None:
        """Close the view and delete its file."""
        self._owned.close()
        shutil.rmtree(self.path.parent, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_as_of(
    recorder: ViewRecorder,
    decode: Callable[[Notification], object],
    as_of_ms: int,
    *,
    retain_after_ms: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> AsOfView:
    """Return the view as of `as_of_ms`: every event at or before it applied, none after."""
    name = Path(tempfile.mkdtemp(prefix="schedlog-as-of-")) / "view.db"
    datastore = SQLiteDatastore(str(name))
    with datastore.transaction(commit=True) as out:
        for statement in [table_ddl(TABLE), *index_ddl(TABLE), *links_ddl()]:
            out.execute(statement)
    with recorder.datastore.transaction(commit=False) as c:
        total = recorder._max_notification_id(c) or 0  # noqa: SLF001
    position, applied = 0, 0
    while True:
        with recorder.datastore.transaction(commit=False) as c:
            rows = _page(recorder, c, position, total)
        if not rows:
            break
        position = rows[-1]["rowid"]
        with datastore.transaction(commit=True) as out:

            def apply(event: object, seq: int, out: SQLiteCursor = out) -> None:
                nonlocal applied
                time = event_time(event)
                if time is None or time > as_of_ms:
                    return
                change = change_for(event, seq)
                if change is not None:
                    apply_change(out, change, TABLE)
                    applied += 1

            _fold(rows, decode, apply)
        if progress is not None:
            progress(position, total)
    if retain_after_ms is not None:
        with datastore.transaction(commit=True) as out:
            while prune(out, TABLE, retain_after_ms, 10_000):
                pass
    return AsOfView(datastore, as_of_ms, applied, name)
