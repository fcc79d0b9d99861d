# ruff: noqa: S608 - table and column names are ours; every value is a parameter
"""The view's row writes: changes with the counts by state they move, whole rows, links (read side).

The live recorders (`view.py`) apply each save's changes with `apply_changes` and write the
counts once per transaction with `move_counts`; replay (`replay.py`) writes whole rows in
batches with `insert_rows` and `insert_links`.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

from schedlog.projections.rows import COLUMNS, TERMINAL, Change, state_after
from schedlog.projections.schema import COUNTS, LINKS, TABLE
from schedlog.projections.sql import Dialect

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from schedlog.projections.sql import Cur

__all__ = [
    "apply_change",
    "apply_changes",
    "change_statements",
    "counts_statements",
    "insert_links",
    "insert_rows",
    "move_counts",
    "unread_statements",
]

_ROW_VALUES = operator.itemgetter(*COLUMNS)
_NOT_TERMINAL = f"state NOT IN ({', '.join(repr(s) for s in TERMINAL)})"
_LINK = f"INSERT INTO {LINKS} (parent_id, child_id, seq) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
_GUARD = f" AND {_NOT_TERMINAL}"
_INSERTS: dict[str, str] = {}
_UPDATES: dict[tuple[str, tuple[str, ...], str], str] = {}
_MOVE_COUNTS: dict[int, str] = {}
_IDS_PER_READ = 500
_BULK = "schedlog_bulk"
_BULK_MIN = 4
"""The fewest updates of one shape written by one `executemany` (`_apply_bulk`): its savepoint
costs about as much as three updates one by one."""
_COUNTED = (
    f"WITH old AS (SELECT state FROM {TABLE} WHERE id = ?), "
    "hit AS ({update} RETURNING state), "
    "moved AS (SELECT old.state AS s, -1 AS d FROM old, hit WHERE old.state <> hit.state "
    "UNION ALL SELECT hit.state, 1 FROM old, hit WHERE old.state <> hit.state) "
    f"INSERT INTO {COUNTS} (state, n) SELECT s, d FROM moved "
    f"ON CONFLICT (state) DO UPDATE SET n = {COUNTS}.n + excluded.n"
)
"""An update that sets a state, and the counts' move from the row's state before to after."""


def _insert_sql(table: str) -> str:
    sql = _INSERTS.get(table)
    if sql is None:
        placeholders = ", ".join("?" * len(COLUMNS))
        sql = f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({placeholders})"
        _INSERTS[table] = sql
    return sql


def apply_changes(c: Cur, changes: Sequence[Change], counts: dict[str, int]) -> None:
    """Write `changes` to the live view, in order; add how its counts by state move to `counts`.

    A change's old state comes from the event where it tells (`Change.leaves`), else from the
    row, read for all such changes in one statement; `move_counts` then writes the counts once
    per transaction. (Row triggers did this before, at about 40 us per changed row on SQLite.)
    The statements go in runs that touch each row once (usually all of them), each run in one
    round trip on PostgreSQL; what each changed is read when its run is back. On SQLite a
    run's updates of one shape (a claim's `Started`, the outcomes it carries) go in one
    `executemany` (`_apply_bulk`): an action drained 1-3% faster, with 5-10 us less CPU, in 5
    of 5 interleaved pairs (10,000 stored actions, in-process, 2026-12-03).
    """
    known: dict[str, str | None] = {}
    inserted = {ch.job_id for ch in changes if ch.insert}  # their state is known once written
    unread = (ch.job_id for ch in changes if ch.leaves is None and "state" in ch.values)
    _read_states(c, [i for i in dict.fromkeys(unread) if i not in inserted], known)
    start = 0
    while start < len(changes):
        if changes[start].insert:  # new rows (a batch's jobs): one statement for all of them
            start = _insert_run(c, changes, start, known, counts)
            continue
        run = _one_change_per_row(changes, start)
        start += len(run)
        if c.dialect is Dialect.SQLITE:  # a statement at a time anyway: the cheapest first
            for group in _same_shape(run):
                if len(group) >= _BULK_MIN and _apply_bulk(c, group):
                    for change in group:
                        _count(c, change, known, counts, changed=True)
                    continue
                for change in group:
                    _count(c, change, known, counts, changed=apply_change(c, change))
            continue
        statements: list[tuple[str, Sequence[object]]] = []
        tells: list[int | None] = []
        for change in run:
            mine, tell = change_statements(change)
            tells.append(None if tell is None else len(statements) + tell)
            statements.extend(mine)
        changed = c.run_all(statements)
        for change, tell in zip(run, tells, strict=True):
            _count(c, change, known, counts, changed=tell is None or changed[tell] > 0)


def _insert_run(
    c: Cur,
    changes: Sequence[Change],
    start: int,
    known: dict[str, str | None],
    counts: dict[str, int],
) -> int:
    """Insert the new rows of `changes` from `start` on, up to the first update; return its index.

    They go in one `executemany` (their links in another), in order: a new row always lands
    and no other change in the run touches it, so this is what their statements one by one
    would do, without a round through Python per row.
    """
    end = start
    while end < len(changes) and changes[end].insert:
        end += 1
    run = changes[start:end]
    rows = [change.values for change in run]
    insert_rows(c, rows)
    insert_links(c, rows)
    for change in run:
        state = change.values["state"]
        known[change.job_id] = state
        counts[state] = counts.get(state, 0) + 1
    return end


def unread_statements(
    changes: Sequence[Change],
    counts: dict[str, int],
    *,
    counted: int = 0,
    seq_from: str | None = None,
) -> list[tuple[str, Sequence[object]]] | None:
    """Return statements for `changes` that need no reading back; add their moves to `counts`.

    New rows (`Scheduled`) and updates that set no state can be sent with the commit: what
    they do to the counts is known without asking. Up to `counted` updates that set a state
    move the counts themselves, in the same statement (PostgreSQL); None if there are more.
    With `seq_from` (the events table), a new row's `seq` is read there, in the statement: its
    `Scheduled` event's id, issued in the same transaction (PostgreSQL).
    """
    statements: list[tuple[str, Sequence[object]]] = []
    added: list[str] = []
    for change in changes:
        mine, tell = change_statements(change)
        if change.insert and seq_from is not None:
            mine = _insert_seq_from(change, seq_from)
        if tell is not None:
            counted -= 1
            if counted < 0:
                return None
            sql, params = mine[tell]
            mine[tell] = (_COUNTED.format(update=sql), [change.job_id, *params])
        elif change.insert:
            added.append(change.values["state"])
        statements.extend(mine)
    for state in added:
        counts[state] = counts.get(state, 0) + 1
    return statements


def _insert_seq_from(change: Change, events: str) -> list[tuple[str, Sequence[object]]]:
    """Return a new row's INSERT (and link) with its `seq` read from `events`.

    Its `seq` is the id of its `Scheduled` (version 1), issued in the same transaction.
    """
    seq = (
        f"(SELECT notification_id FROM {events} WHERE originator_id = ? AND originator_version = 1)"
    )
    marks = [seq if col == "seq" else "?" for col in COLUMNS]
    params = [change.job_id if col == "seq" else change.values[col] for col in COLUMNS]
    statements: list[tuple[str, Sequence[object]]] = [
        (f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join(marks)})", params)
    ]
    parent = change.values["parent_id"]
    if parent is not None:
        statements.append((_LINK.replace("?)", f"{seq})"), (parent, change.job_id, change.job_id)))
    return statements


def _same_shape(run: Sequence[Change]) -> Iterator[Sequence[Change]]:
    """Split `run` into its consecutive updates that set the same columns the same way.

    A claim's `Started` changes are one such group, the outcomes it carries another. An
    insert is a group of its own.
    """
    start = 0
    while start < len(run):
        first = run[start]
        end = start + 1
        if not first.insert:
            shape = (tuple(first.values), tuple(first.guarded))
            while end < len(run) and not run[end].insert:
                change = run[end]
                if (tuple(change.values), tuple(change.guarded)) != shape:
                    break
                end += 1
        yield run[start:end]
        start = end


def _apply_bulk(c: Cur, group: Sequence[Change]) -> bool:
    """Write `group`'s updates (one shape) in one `executemany`; return whether each hit its row.

    As `apply_change` writes each, guard included, without a round through Python per row
    (SQLite). If any missed (no row, or its guard found the row final), the group is rolled
    back to before it and False returned: the caller then writes it one change at a time.
    """
    sql, _ = _guarded_update(group[0])
    c.execute(f"SAVEPOINT {_BULK}")
    c.executemany(sql, [_guarded_update(change)[1] for change in group])
    hit = c.rowcount == len(group)
    if not hit:
        c.execute(f"ROLLBACK TO {_BULK}")
    c.execute(f"RELEASE {_BULK}")
    return hit


def _one_change_per_row(changes: Sequence[Change], start: int) -> Sequence[Change]:
    """Return the changes from `start` on, up to the first that touches a row already in them."""
    seen: set[str] = set()
    for end in range(start, len(changes)):
        if changes[end].job_id in seen:
            return changes[start:end]
        seen.add(changes[end].job_id)
    return changes[start:]


def _count(
    c: Cur,
    change: Change,
    known: dict[str, str | None],
    counts: dict[str, int],
    *,
    changed: bool,
) -> None:
    """Move `counts` by what `change` did to its row (`changed`: its state's statement hit)."""
    if not (change.insert or "state" in change.values or "state" in change.guarded):
        return
    if change.insert:
        old = None
    elif change.job_id in known:
        old = known[change.job_id]
    else:
        old = change.leaves
    if not changed:  # no row, or its guard found it finished: nothing moved
        _read_states(c, [change.job_id], known)
        return
    new = state_after(old, change)
    known[change.job_id] = new
    if old != new:
        if old is not None:
            counts[old] = counts.get(old, 0) - 1
        if new is not None:
            counts[new] = counts.get(new, 0) + 1


def move_counts(c: Cur, counts: dict[str, int]) -> None:
    """Move the live view's counts by state by `counts` (one statement; none if nothing moved)."""
    c.run_all(counts_statements(counts))


def counts_statements(counts: dict[str, int]) -> list[tuple[str, Sequence[object]]]:
    """Return the statement that moves the counts by state by `counts` (none if none move)."""
    moved = [(state, n) for state, n in counts.items() if n]
    if not moved:
        return []
    return [(_move_counts_sql(len(moved)), [v for pair in moved for v in pair])]


def _read_states(c: Cur, job_ids: list[str], into: dict[str, str | None]) -> None:
    for job_id in job_ids:
        into[job_id] = None  # no row, unless read below
    for first in range(0, len(job_ids), _IDS_PER_READ):
        chunk = job_ids[first : first + _IDS_PER_READ]
        marks = ", ".join("?" * len(chunk))
        c.execute(f"SELECT id, state FROM {TABLE} WHERE id IN ({marks})", chunk)
        into.update((row["id"], row["state"]) for row in c.fetchall())


def _move_counts_sql(pairs: int) -> str:
    sql = _MOVE_COUNTS.get(pairs)
    if sql is None:
        values = ", ".join(["(?, ?)"] * pairs)
        sql = (
            f"INSERT INTO {COUNTS} (state, n) VALUES {values} "
            f"ON CONFLICT (state) DO UPDATE SET n = {COUNTS}.n + excluded.n"
        )
        _MOVE_COUNTS[pairs] = sql
    return sql


def apply_change(c: Cur, change: Change, table: str = TABLE) -> bool:
    """Write one change to the view table `table` (and a new job's link to its parent).

    Returns whether the statement that sets the row's state (if any) changed a row. On SQLite
    a change with guarded values (a completion: its version, and its outcome unless the row is
    final, S21) is one statement with the guard, followed by its unguarded values alone only if
    the guard failed (a cancel had landed): not two statements every time (~15 us each).
    """
    guarded, values = change.guarded, change.values
    if c.dialect is not Dialect.SQLITE or not guarded:
        statements, tell = change_statements(change, table)
        changed = c.run_all(statements)
        return tell is None or changed[tell] > 0
    c.execute(*_guarded_update(change, table))
    if c.rowcount > 0:
        return True
    if values:  # the guard failed: the unguarded values still apply
        c.execute(_update_sql(table, tuple(values), ""), [*values.values(), change.job_id])
        if "state" in values and "state" not in guarded:
            return c.rowcount > 0
    return "state" not in guarded and "state" not in values


def _guarded_update(change: Change, table: str = TABLE) -> tuple[str, list[object]]:
    """Return the one UPDATE of an update `change`, its guarded values under their guard (SQLite).

    A column in both: the last one wins, as in two statements.
    """
    values, guarded = change.values, change.guarded
    sql = _update_sql(table, (*values, *guarded), _GUARD if guarded else "")
    return sql, [*values.values(), *guarded.values(), change.job_id]


def change_statements(
    change: Change, table: str = TABLE
) -> tuple[list[tuple[str, Sequence[object]]], int | None]:
    """Return the statements that write `change`, and which of them sets the row's state.

    An insert (and its link to a parent) always lands: it names no such statement.
    """
    if change.insert:
        statements: list[tuple[str, Sequence[object]]] = [
            (_insert_sql(table), [change.values[col] for col in COLUMNS])
        ]
        parent = change.values["parent_id"]
        if parent is not None:
            statements.append((_LINK, (parent, change.job_id, change.values["seq"])))
        return statements, None
    statements = []
    tell = None
    for values, guard in ((change.values, ""), (change.guarded, _GUARD)):
        if values:
            if "state" in values:
                tell = len(statements)
            statements.append(
                (_update_sql(table, tuple(values), guard), [*values.values(), change.job_id])
            )
    return statements, tell


def _update_sql(table: str, columns: tuple[str, ...], guard: str) -> str:
    """Return the UPDATE of `columns` of the row by id, with `guard` (made once per shape)."""
    key = (table, columns, guard)
    sql = _UPDATES.get(key)
    if sql is None:
        cols = ", ".join(f"{k} = ?" for k in columns)
        sql = _UPDATES[key] = f"UPDATE {table} SET {cols} WHERE id = ?{guard}"
    return sql


def insert_rows(c: Cur, rows: Iterable[Mapping[str, Any]], table: str = TABLE) -> None:
    """Write whole new rows to `table` in one statement (replay's batches; no links)."""
    c.executemany(_insert_sql(table), map(_ROW_VALUES, rows))


def insert_links(c: Cur, rows: Iterable[Mapping[str, Any]]) -> None:
    """Record the parent of each new row that has one (as `apply_change` does for an insert)."""
    links = [(r["parent_id"], r["id"], r["seq"]) for r in rows if r["parent_id"] is not None]
    if links:
        c.executemany(_LINK, links)
