"""Rebuilds the view from the log, and builds views as of a past instant (S27, S28).

Both read the log in pages, in global order, with bounded memory, and run each event through
the same pure `change_of` the live path uses. `rebuild` fills a table beside the live view,
then swaps it in inside one short write transaction that first folds whatever was appended
meanwhile; `build_as_of` fills a separate SQLite database that only holds the view.

Replay does per event only what the view needs (issue 4): `decode.JobEventDecoder` reads a
stored event's JSON with orjson straight into the fields `change_of` takes (no domain event,
UUID or timestamp is built), and `_Rows` folds the changes of recent jobs in memory, so each row is
written once, in batches, instead of an INSERT and then an UPDATE per later event.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from eventsourcing.sqlite import SQLiteDatastore

from schedlog.events import StoreError
from schedlog.projections.queries import ScheduledFunctions
from schedlog.projections.rows import TERMINAL, Change, apply_to_rows, change_of, event_time_of
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
from schedlog.projections.view import JOB_TOPIC_PREFIX, VIEW_NAME
from schedlog.projections.writes import apply_change, insert_links, insert_rows

if TYPE_CHECKING:
    from collections.abc import Callable

    from schedlog.projections.decode import Fields, JobEventDecoder


__all__ = [
    "AsOfView",
    "RebuildRaceError",
    "build_as_of",
    "prune",
    "rebuild",
]

PAGE = 2_000
PAGES_PER_TRANSACTION = 10
"""A rebuild holds the write lock for this many pages at a time (a few tenths of a second)."""
ROWS_IN_MEMORY = 50_000
"""How many unwritten rows replay holds (tens of MB); beyond it the oldest half is written."""
_REBUILD = TABLE + "_rebuild_"
"""Each rebuild folds into a table of its own, this prefix and a random suffix: two rebuilds at
once never write into one table, and each swaps in a complete view (the later one wins)."""


class _Rows:
    """The rows replay has not written yet; the changes of their later events fold in memory.

    A change to a row already written is an UPDATE, as on the live path. Rows are written
    oldest first, in batches, once more than ROWS_IN_MEMORY are held, and all of them by
    `flush()`. A row that retention would prune at once is not written at all: a finished
    row's state and completion time never change again (only its version, S21).
    """

    def __init__(self, table: str, retain_after_ms: int | None) -> None:
        self.table = table
        self.retain_after_ms = retain_after_ms
        self.rows: dict[str, dict[str, Any]] = {}
        self.cursor: Cur | None = None

    def apply(self, change: Change) -> None:
        if change.insert:
            self.rows[change.job_id] = dict(change.values)
            if len(self.rows) > ROWS_IN_MEMORY:
                self.flush(len(self.rows) // 2)
        elif change.job_id in self.rows:
            apply_to_rows(self.rows, change)
        else:
            apply_change(self._cursor(), change, self.table)

    def flush(self, count: int | None = None) -> None:
        """Write the `count` oldest rows (all of them by default), in id order."""
        ids = sorted(itertools.islice(self.rows, count))  # the id index's order: fewer pages
        rows = [self.rows.pop(job_id) for job_id in ids]
        c = self._cursor()
        insert_links(c, rows)
        before = self.retain_after_ms
        if before is not None:
            rows = [r for r in rows if r["state"] not in TERMINAL or r["completed_time"] > before]
        if rows:
            insert_rows(c, rows, self.table)

    def _cursor(self) -> Cur:
        if self.cursor is None:
            msg = "replay wrote a row outside a transaction"
            raise RuntimeError(msg)
        return self.cursor


def prune(c: Cur, table: str, before_ms: int, limit: int) -> int:
    """Delete up to `limit` terminal rows completed at or before `before_ms` (S28); count them."""
    c.execute(
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} "  # noqa: S608
        f"WHERE state IN ({TERMINAL_SQL}) AND completed_time <= ? LIMIT ?)",
        (before_ms, limit),
    )
    return c.rowcount


def _page(db: Db, c: Cur, after: int, upto: int | None) -> list[tuple[Any, ...]]:
    """Return the next page of the log: (position, originator id, version, topic, state)."""
    pos = db.position_column
    bound = "" if upto is None else f" AND {pos} <= ?"
    return c.tuples(
        f"SELECT {pos}, originator_id, originator_version, topic, state "  # noqa: S608
        f"FROM {db.events_table} WHERE {pos} > ?{bound} ORDER BY {pos} LIMIT ?",
        (after, *(() if upto is None else (upto,)), PAGE),
    )


def _fold(
    rows: list[tuple[Any, ...]], decoder: JobEventDecoder, apply: Callable[[Fields, int], None]
) -> int:
    applied = 0
    for nid, oid, version, topic, state in rows:
        if not topic.startswith(JOB_TOPIC_PREFIX):
            continue
        blob = state if isinstance(state, bytes) else bytes(state)  # PostgreSQL: a memoryview
        apply(decoder.decode(nid, oid, version, topic, blob), nid)
        applied += 1
    return applied


def _applier(out: _Rows) -> Callable[[Fields, int], None]:
    def apply(event: Fields, seq: int) -> None:
        change = change_of(*event, seq)
        if change is not None:
            out.apply(change)

    return apply


def _fold_log(  # noqa: PLR0913, PLR0917 - one loop for both replays
    db: Db,
    target: Db,
    decoder: JobEventDecoder,
    out: _Rows,
    apply: Callable[[Fields, int], None],
    total: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[int, int]:
    """Fold the log into `target`: the store's own database, or another one up to `total`.

    Each transaction on `target` folds a few pages; return the last position read and how many
    job events were folded.
    """
    upto = None if target.datastore is db.datastore else total
    position, folded, done = 0, 0, False
    while not done:
        with target.transaction(commit=True) as c:
            out.cursor = c
            for _ in range(PAGES_PER_TRANSACTION):
                if upto is None:
                    rows = _page(db, c, position, None)
                else:
                    with db.transaction(commit=False) as r:
                        rows = _page(db, r, position, upto)
                if not rows:
                    done = True
                    break
                folded += _fold(rows, decoder, apply)
                position = rows[-1][0]
                if progress is not None:
                    progress(position, max(total, position))
            if done:
                out.flush()
            out.cursor = None
    return position, folded


def rebuild(
    db: Db,
    decoder: JobEventDecoder,
    *,
    retain_after_ms: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Drop and rebuild the live view from the log; return how many job events it applied.

    A rebuild whose table another one's swap dropped (a rebuild finished meanwhile, and the
    view is complete) raises `RebuildRaceError`.
    """
    scratch = _REBUILD + secrets.token_hex(6)
    with db.transaction(commit=True) as c:
        c.execute(table_ddl(scratch, db.dialect))
        c.execute(f"SELECT MAX({db.position_column}) AS last FROM {db.events_table}")  # noqa: S608
        total = c.fetchone()["last"] or 0
    out = _Rows(scratch, retain_after_ms)
    try:
        # 1. page through the log, a few pages per short transaction
        position, applied = _fold_log(db, db, decoder, out, _applier(out), total, progress)
        return applied + _swap(db, decoder, scratch, position, retain_after_ms)
    except BaseException as error:
        if not _table_exists(db, scratch) and _is_missing_table(error):
            raise RebuildRaceError(
                "another rebuild of the view finished while this one ran, and dropped this "
                "one's table: the view is rebuilt (by the other)"
            ) from error
        with contextlib.suppress(Exception), db.transaction(commit=True) as c:
            c.execute(f"DROP TABLE IF EXISTS {scratch}")  # a copy of the view: not left behind
        raise


class RebuildRaceError(StoreError):
    """A rebuild lost its table to another rebuild's swap (the view is rebuilt)."""


def _is_missing_table(error: BaseException) -> bool:
    text = str(error).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def _scratch_tables(db: Db) -> list[str]:
    """Return the rebuild tables in the store: under way, or left by a rebuild that died.

    Also the one scratch table of earlier versions (`..._rebuild`, no suffix).
    """
    if db.dialect is Dialect.POSTGRES:
        sql = "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    with db.transaction(commit=False) as c:
        c.execute(sql)
        return [r["name"] for r in c.fetchall() if r["name"].startswith(_REBUILD.rstrip("_"))]


def _table_exists(db: Db, table: str) -> bool:
    try:
        return table in _scratch_tables(db)
    except Exception:  # only deciding which error to raise
        return True


def _swap(
    db: Db,
    decoder: JobEventDecoder,
    scratch: str,
    position: int,
    retain_after_ms: int | None,
) -> int:
    applied = 0
    others = [t for t in _scratch_tables(db) if t != scratch]
    with db.transaction(commit=True) as c:
        # 2. One write transaction: what was appended meanwhile, retention, then the swap.
        if db.dialect is Dialect.POSTGRES:  # the event writers' lock: nothing appends meanwhile
            c.execute(f"LOCK TABLE {db.events_table} IN EXCLUSIVE MODE")
        out = _Rows(scratch, retain_after_ms)
        out.cursor = c
        apply = _applier(out)
        while rows := _page(db, c, position, None):
            applied += _fold(rows, decoder, apply)
            position = rows[-1][0]
        out.flush()
        if retain_after_ms is not None:
            while prune(c, scratch, retain_after_ms, 10_000):
                pass
        c.execute(f"DROP TABLE {TABLE}")
        c.execute(f"ALTER TABLE {scratch} RENAME TO {TABLE}")
        for statement in [*index_ddl(TABLE), *trigger_ddl(TABLE, db.dialect)]:
            c.execute(statement)
        c.execute(f"DELETE FROM {COUNTS}")  # noqa: S608
        c.execute(
            f"INSERT INTO {COUNTS} (state, n) SELECT state, COUNT(*) FROM {TABLE} GROUP BY state"  # noqa: S608
        )
        c.execute(f"UPDATE {POSITION} SET position = ? WHERE view = ?", (position, VIEW_NAME))  # noqa: S608
        for other in others:  # a rebuild that died left it, or one under way loses the race
            c.execute(f"DROP TABLE IF EXISTS {other}")
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
        self._delete = weakref.finalize(self, _delete_view, datastore, path)  # if never closed

    def close(self) -> None:
        """Close the view and delete its file."""
        self._delete()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _delete_view(datastore: SQLiteDatastore, path: Path) -> None:
    """Close an as-of view's store and delete its file (and the directory made for it)."""
    datastore.close()
    shutil.rmtree(path.parent, ignore_errors=True)


def build_as_of(
    db: Db,
    decoder: JobEventDecoder,
    as_of_ms: int,
    *,
    retain_after_ms: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> AsOfView:
    """Return the view as of `as_of_ms`: every event at or before it applied, none after."""
    name = Path(tempfile.mkdtemp(prefix="schedlog-as-of-")) / "view.db"
    datastore = SQLiteDatastore(str(name))
    try:
        out_db = Db(datastore, Dialect.SQLITE, "", "rowid")
        with out_db.transaction(commit=True) as out_c:
            for statement in [table_ddl(TABLE), *links_ddl()]:
                out_c.execute(statement)
        with db.transaction(commit=False) as c:
            c.execute(f"SELECT MAX({db.position_column}) AS last FROM {db.events_table}")  # noqa: S608
            total = c.fetchone()["last"] or 0
        out = _Rows(TABLE, retain_after_ms)
        applied = 0

        def apply(event: Fields, seq: int) -> None:
            nonlocal applied
            time = event_time_of(event[0], event[3])
            if time is None or time > as_of_ms:
                return
            change = change_of(*event, seq)
            if change is not None:
                out.apply(change)
                applied += 1

        _fold_log(db, out_db, decoder, out, apply, total, progress)
        with out_db.transaction(commit=True) as out_c:
            if retain_after_ms is not None:
                while prune(out_c, TABLE, retain_after_ms, 10_000):
                    pass
            for statement in index_ddl(TABLE):  # once, at the end: faster than row by row
                out_c.execute(statement)
        return AsOfView(datastore, as_of_ms, applied, name)
    except BaseException:  # an error, or Ctrl-C: the half-built view goes
        _delete_view(datastore, name)
        raise
