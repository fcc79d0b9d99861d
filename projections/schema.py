# ruff: noqa: S608 - table names are ours; every value is a parameter
"""The SQL shape of the read side: the view table, its indexes, state counts, links, position.

Every statement takes the table's name, so a rebuild (`replay.py`) can fill a table beside the
live one and swap it in, and the dialect (SQLite or PostgreSQL). Counts by state are kept with
the live table's rows (by its writer, and by a trigger on delete), so `stats` reads a handful of
rows at any size; links (which job
scheduled which) live in their own table, which retention never prunes, so history keeps them
(S28, S29). The view's position in the log is kept in the same transaction as its rows (S26).
"""

from __future__ import annotations

from schedlog.projections.rows import TERMINAL
from schedlog.projections.sql import Dialect

__all__ = [
    "COUNTS",
    "LINKS",
    "POSITION",
    "TABLE",
    "TERMINAL_SQL",
    "count_ddl",
    "index_ddl",
    "links_ddl",
    "position_ddl",
    "table_ddl",
    "trigger_ddl",
    "view_ddl",
]

TABLE = "_scheduled_functions_v1"
COUNTS = "schedlog_state_counts_v1"
LINKS = "schedlog_links_v1"
POSITION = "schedlog_view_position_v1"
TERMINAL_SQL = ", ".join(f"'{state}'" for state in TERMINAL)


def _types(dialect: Dialect) -> tuple[str, str]:
    return ("BIGINT", "BYTEA") if dialect is Dialect.POSTGRES else ("INTEGER", "BLOB")


def table_ddl(table: str, dialect: Dialect = Dialect.SQLITE) -> str:
    """Return the CREATE TABLE of a view table named `table`."""
    integer, blob = _types(dialect)
    return f"""CREATE TABLE IF NOT EXISTS {table} (
        id TEXT PRIMARY KEY,
        seq {integer} NOT NULL,
        creation_time {integer} NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        args {blob} NOT NULL,
        kwargs {blob},
        scheduled_time {integer} NOT NULL,
        run_at {integer} NOT NULL,
        completed_time {integer},
        state TEXT NOT NULL,
        error TEXT,
        parent_id TEXT,
        attempt {integer} NOT NULL,
        node_id TEXT,
        lease_until {integer},
        version {integer} NOT NULL)"""


def index_ddl(table: str) -> list[str]:
    """Return the indexes of a view table: by time, state, name, parent, due time, retention."""
    return [
        f"CREATE INDEX IF NOT EXISTS {table}_by_time ON {table} (scheduled_time, seq)",
        f"CREATE INDEX IF NOT EXISTS {table}_by_state ON {table} (state, scheduled_time, seq)",
        f"CREATE INDEX IF NOT EXISTS {table}_by_name ON {table} (name, scheduled_time, seq)",
        (
            f"CREATE INDEX IF NOT EXISTS {table}_by_parent ON {table} "
            "(parent_id, scheduled_time, seq) WHERE parent_id IS NOT NULL"
        ),
        f"CREATE INDEX IF NOT EXISTS {table}_due ON {table} (run_at, seq) WHERE state = 'pending'",
        (
            f"CREATE INDEX IF NOT EXISTS {table}_finished ON {table} (completed_time) "
            f"WHERE state IN ({TERMINAL_SQL})"
        ),
    ]


def count_ddl(dialect: Dialect = Dialect.SQLITE) -> list[str]:
    """Return the table of row counts by state."""
    integer, _ = _types(dialect)
    return [f"CREATE TABLE IF NOT EXISTS {COUNTS} (state TEXT PRIMARY KEY, n {integer} NOT NULL)"]


def trigger_ddl(table: str, dialect: Dialect = Dialect.SQLITE) -> list[str]:
    """Return the trigger that takes deleted rows of `table` off `COUNTS` (retention, S28).

    Inserts and state changes move the counts in the writer's own statement, once per save
    (`view.apply_changes`): a row trigger cost SQLite about 40 us per changed row. The triggers
    that did it before are dropped from stores made by earlier versions.
    """
    drop = f"UPDATE {COUNTS} SET n = n - 1 WHERE state = OLD.state"
    if dialect is Dialect.POSTGRES:
        return [
            f"""CREATE OR REPLACE FUNCTION {table}_count() RETURNS trigger AS $$
            BEGIN {drop}; RETURN NULL; END $$ LANGUAGE plpgsql""",
            f"DROP TRIGGER IF EXISTS {table}_count_updates ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_count_changes ON {table}",
            (
                f"CREATE TRIGGER {table}_count_changes AFTER DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {table}_count()"
            ),
        ]
    return [
        f"DROP TRIGGER IF EXISTS {table}_count_insert",
        f"DROP TRIGGER IF EXISTS {table}_count_update",
        (
            f"CREATE TRIGGER IF NOT EXISTS {table}_count_delete AFTER DELETE ON {table} "
            f"BEGIN {drop}; END"
        ),
    ]


def links_ddl(dialect: Dialect = Dialect.SQLITE) -> list[str]:
    """Return the table of parent -> child links, in scheduling order."""
    integer, _ = _types(dialect)
    rowid = "" if dialect is Dialect.POSTGRES else " WITHOUT ROWID"
    return [
        (
            f"CREATE TABLE IF NOT EXISTS {LINKS} (parent_id TEXT NOT NULL, child_id TEXT NOT NULL, "
            f"seq {integer} NOT NULL, PRIMARY KEY (parent_id, seq)){rowid}"
        )
    ]


def position_ddl(dialect: Dialect = Dialect.SQLITE) -> list[str]:
    """Return the table holding each view's position in the log (its last applied event)."""
    integer, _ = _types(dialect)
    return [
        (
            f"CREATE TABLE IF NOT EXISTS {POSITION} (view TEXT PRIMARY KEY, "
            f"position {integer} NOT NULL)"
        )
    ]


def view_ddl(dialect: Dialect) -> list[str]:
    """Return every statement that creates the live read side."""
    return [
        table_ddl(TABLE, dialect),
        *index_ddl(TABLE),
        *count_ddl(dialect),
        *trigger_ddl(TABLE, dialect),
        *links_ddl(dialect),
        *position_ddl(dialect),
    ]
