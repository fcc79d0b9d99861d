"""Rebuilds the view from the log, and builds views as of a past instant (S27, S28).

Both read the log in pages, in global order, with constant memory, and run each event through
the same pure `change_for` the live path uses. `rebuild` fills a table beside the live view,
then swaps it in inside one short write transaction that first folds whatever was appended
meanwhile; `build_as_of` fills a separate SQLite database that only holds the view.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from eventsourcing.sqlite import SQLiteDatastore

from schedlog.events import ScheduledFunction
from schedlog.projections.queries import ScheduledFunctions
from schedlog.projections.rows import change_for
from schedlog.projections.schema import (
    COUNTS,
    POSITION,
    TABLE,
    TERMINAL_SQL,
    index_ddl,
    links_ddl,
    table_ddl,
    trigger_ddl,
)
from schedlog.projections.sql import Cur, Db, Dialect
from schedlog.projections.view import JOB_TOPIC_PREFIX, VIEW_NAME, apply_change, notification_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from eventsourcing.persistence import Notification

__all__ = ["AsOfView", "build_as_of", "event_time", "prune", "rebuild"]

PAGE = 2_000
_REBUILD = TABLE + "_rebuild"


def event_time(event: object) -> int | None:
    """Return an event's domain time in ms (when it happened, by the App's clock)."""
    if isinstance(event, ScheduledFunction.Scheduled):
        return event.creation_time_ms
    at = getattr(event, "at_ms", None)
    return at if isinstance(at, int) else None


def prune(c: Cur, table: str, before_ms: int, limit: int) -> int:
    """Delete up to `limit` terminal rows completed at or before `before_ms` (S28); count them."""
    c.execute(
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "  # noqa: S608
        f"WHERE state IN ({TERMINAL_SQL}) AND completed_time <= ? LIMIT ?)",
        (before_ms, limit),
    )
    return c.changes()


def _page(db: Db, c: Cur, after: int, upto: int | None) -> list[Any]:
    pos = db.position_column
    bound = "" if upto is None else f" AND {pos} <= ?"
    c.execute(
        f"SELECT {pos}, originator_id, originator_version, topic, state "  # noqa: S608
        f"FROM {db.events_table} WHERE {pos} > ?{bound} ORDER BY {pos} LIMIT ?",
        (after, *(() if upto is None else (upto,)), PAGE),
    )
    return c.fetchall()


def _fold(
    db: Db,
    rows: list[Any],
    decode: Callable[[Notification], object],
    apply: Callable[[object, int], None],
) -> int:
    applied = 0
    for row in rows:
        if not row["topic"].startswith(JOB_TOPIC_PREFIX):
            continue
        notification = notification_of(row, db.position_column)
        apply(decode(notification), notification.id)
        applied += 1
    return applied


def _applier(c: Cur) -> Callable[[object, int], None]:
    def apply(event: object, seq: int) -> None:
        change = change_for(event, seq)
        if change is not None:
            apply_change(c, change, _REBUILD)

    return apply


def rebuild(
    db: Db,
    decode: Callable[[Notification], object],
    *,
    retain_after_ms: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Drop and rebuild the live view from the log; return how many job events it applied."""
    with db.transaction(commit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {_REBUILD}")
        c.execute(table_ddl(_REBUILD, db.dialect))
        c.execute(f"SELECT MAX({db.position_column}) AS last FROM {db.events_table}")  # noqa: S608
        total = c.fetchone()["last"] or 0
    position, applied = 0, 0
    while True:  # 1. page through the log, one short transaction per page
        with db.transaction(commit=True) as c:
            rows = _page(db, c, position, None)
            if not rows:
                break
            applied += _fold(db, rows, decode, _applier(c))
            position = rows[-1][db.position_column]
        if progress is not None:
            progress(position, max(total, position))
    return applied + _swap(db, decode, position, retain_after_ms)


def _swap(
    db: Db,
    decode: Callable[[Notification], object],
    position: int,
    retain_after_ms: int | None,
) -> int:
    applied = 0
    with db.transaction(commit=True) as c:
        # 2. One write transaction: what was appended meanwhile, retention, then the swap.
        if db.dialect is Dialect.POSTGRES:  # the event writers' lock: nothing appends meanwhile
            c.execute(f"LOCK TABLE {db.events_table} IN EXCLUSIVE MODE")
        while rows := _page(db, c, position, None):
            applied += _fold(db, rows, decode, _applier(c))
            position = rows[-1][db.position_column]
        if retain_after_ms is not None:
            while prune(c, _REBUILD, retain_after_ms, 10_000):
                pass
        c.execute(f"DROP TABLE {TABLE}")
        c.execute(f"ALTER TABLE {_REBUILD} RENAME TO {TABLE}")
        for statement in [*index_ddl(TABLE), *trigger_ddl(TABLE, db.dialect)]:
            c.execute(statement)
        c.execute(f"DELETE FROM {COUNTS}")  # noqa: S608
        c.execute(
            f"INSERT INTO {COUNTS} (state, n) SELECT state, COUNT(*) FROM {TABLE} GROUP BY state"  # noqa: S608
        )
        c.execute(f"UPDATE {POSITION} SET position = ? WHERE view = ?", (position, VIEW_NAME))  # noqa: S608
    return applied


class AsOfView(ScheduledFunctions):
    """A read-only view of `_scheduled_functions` as it stood at `as_of_ms` (same get/query).

    It lives in a temporary SQLite file of its own; `close()` (or leaving a `with` block)
    deletes it.
    """

    def __init__(self, datastore: SQLiteDatastore, as_of_ms: int, applied: int, path: Path) -> None:
        super().__init__(Db(datastore, Dialect.SQLITE, "", "rowid"), TABLE, counted=False)
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
    db: Db,
    decode: Callable[[Notification], object],
    as_of_ms: int,
    *,
    retain_after_ms: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> AsOfView:
    """Return the view as of `as_of_ms`: every event at or before it applied, none after."""
    name = Path(tempfile.mkdtemp(prefix="schedlog-as-of-")) / "view.db"
    datastore = SQLiteDatastore(str(name))
    out_db = Db(datastore, Dialect.SQLITE, "", "rowid")
    with out_db.transaction(commit=True) as out:
        for statement in [table_ddl(TABLE), *index_ddl(TABLE), *links_ddl()]:
            out.execute(statement)
    with db.transaction(commit=False) as c:
        c.execute(f"SELECT MAX({db.position_column}) AS last FROM {db.events_table}")  # noqa: S608
        total = c.fetchone()["last"] or 0
    position, applied = 0, 0
    while True:
        with db.transaction(commit=False) as c:
            rows = _page(db, c, position, total)
        if not rows:
            break
        position = rows[-1][db.position_column]
        with out_db.transaction(commit=True) as out:

            def apply(event: object, seq: int, out: Cur = out) -> None:
                nonlocal applied
                time = event_time(event)
                if time is None or time > as_of_ms:
                    return
                change = change_for(event, seq)
                if change is not None:
                    apply_change(out, change, TABLE)
                    applied += 1

            _fold(db, rows, decode, apply)
        if progress is not None:
            progress(position, total)
    if retain_after_ms is not None:
        with out_db.transaction(commit=True) as out:
            while prune(out, TABLE, retain_after_ms, 10_000):
                pass
    return AsOfView(datastore, as_of_ms, applied, name)
