# ruff: noqa: S608 - table names are ours; every value is a parameter
"""The SQL shape of the read side: the view table, its indexes, state counts and job links.

Every statement takes the table's name, so a rebuild (`replay.py`) can fill a table beside the
live one and swap it in. Counts by state are kept by triggers on the live table, so `stats`
reads a handful of rows at any size; links (which job scheduled which) live in their own table,
which retention never prunes, so history keeps them (S28, S29).
"""

from __future__ import annotations

from schedlog.projections.rows import TERMINAL

__all__ = [
    "COUNTS",
    "LINKS",
    "TABLE",
    "count_ddl",
    "index_ddl",
    "links_ddl",
    "table_ddl",
    "trigger_ddl",
]

TABLE = "_scheduled_functions_v1"
COUNTS = "schedlog_state_counts_v1"
LINKS = "schedlog_links_v1"
TERMINAL_SQL = ", ".join(f"'{state}'" for state in TERMINAL)


def table_ddl(table: str) -> str:
    """Return the CREATE TABLE of a view table named `table`."""
    return f"""CREATE TABLE IF NOT EXISTS {table} (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        creation_time INTEGER NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        args BLOB NOT NULL,
        kwargs BLOB,
        scheduled_time INTEGER NOT NULL,
        run_at INTEGER NOT NULL,
        completed_time INTEGER,
        state TEXT NOT NULL,
        error TEXT,
        parent_id TEXT,
        attempt INTEGER NOT NULL,
        node_id TEXT,
        lease_until INTEGER,
        version INTEGER NOT NULL)"""


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


def count_ddl() -> list[str]:
    """Return the table of row counts by state."""
    return [f"CREATE TABLE IF NOT EXISTS {COUNTS} (state TEXT PRIMARY KEY, n INTEGER NOT NULL)"]


def trigger_ddl(table: str) -> list[str]:
    """Return the triggers that keep `COUNTS` equal to the rows of `table` by state."""
    bump = (
        f"INSERT INTO {COUNTS} (state, n) VALUES (NEW.state, 1) "
        "ON CONFLICT (state) DO UPDATE SET n = n + 1"
    )
    drop = f"UPDATE {COUNTS} SET n = n - 1 WHERE state = OLD.state"
    return [
        (
            f"CREATE TRIGGER IF NOT EXISTS {table}_count_insert AFTER INSERT ON {table} "
            f"BEGIN {bump}; END"
        ),
        (
            f"CREATE TRIGGER IF NOT EXISTS {table}_count_update AFTER UPDATE OF state ON {table} "
            f"WHEN OLD.state IS NOT NEW.state BEGIN {drop}; {bump}; END"
        ),
        (
            f"CREATE TRIGGER IF NOT EXISTS {table}_count_delete AFTER DELETE ON {table} "
            f"BEGIN {drop}; END"
        ),
    ]


def links_ddl() -> list[str]:
    """Return the table of parent -> child links, in scheduling order."""
    return [
        (
            f"CREATE TABLE IF NOT EXISTS {LINKS} (parent_id TEXT NOT NULL, child_id TEXT NOT NULL, "
            "seq INTEGER NOT NULL, PRIMARY KEY (parent_id, seq)) WITHOUT ROWID"
        )
    ]
