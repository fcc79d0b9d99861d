"""How fast could one `run_at` at a time be with a slimmer schema? W0's floor, schema variants.

W0's "schedlog's rows by hand" writes one `run_at`'s rows per commit (its event, the view row,
the counts and the view's position; every commit fsynced) with no Python above the driver: the
floor of W1 one call at a time. This runs the same statements on fresh files whose schema
differs from schedlog's in one way each, runs interleaved, and prints each one's calls/s:

- `current`: schedlog's schema (the view's DDL from `projections/schema.py`);
- `no by_time`: without the view's index on (scheduled_time, seq) (unfiltered time queries
  would then merge the by-state index's runs);
- `without rowid`: the view keyed by its id alone (one B-tree less than a rowid table with a
  unique id);
- `counts+position`: the view's position kept as a row of the counts table (one page less);
- `all three`.

    .venv/bin/python bench/schema_floor.py              # 3,000 calls per file, 3 rounds
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schedlog.events import ScheduledFunction  # noqa: E402
from schedlog.projections.schema import index_ddl, table_ddl  # noqa: E402
from schedlog.projections.sqlite_store import PAGE_SIZE  # noqa: E402

HOUR_MS = 3_600_000
TOPIC = "schedlog.events.function:ScheduledFunction.Scheduled"
STATE = (
    b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-03T11:07:22.537112+00:00"},'
    b'"originator_topic":"schedlog.events.function:ScheduledFunction","name":"bench:noop",'
    b'"kind":"action","args":["/tmp/sink",1],"kwargs":{},"scheduled_time_ms":1796296042537,'
    b'"creation_time_ms":1796296042537,"parent_id":null}'
)  # a real Scheduled event's stored state
VARIANTS: dict[str, dict[str, bool]] = {
    "current": {},
    "no by_time": {"no_time": True},
    "without rowid": {"without_rowid": True},
    "counts+position": {"merged": True},
    "all three": {"no_time": True, "without_rowid": True, "merged": True},
}
COLUMNS = (
    "id, seq, creation_time, name, kind, args, kwargs, scheduled_time, run_at, completed_time, "
    "state, error, parent_id, attempt, node_id, lease_until, version"
)


def _open(path: Path, *, no_time: bool = False, without_rowid: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE stored_events (notification_id INTEGER PRIMARY KEY, "
        "originator_id TEXT NOT NULL, originator_version INTEGER NOT NULL, topic TEXT, "
        "state BLOB, UNIQUE (originator_id, originator_version))"
    )
    conn.execute(table_ddl("v") + (" WITHOUT ROWID" if without_rowid else ""))
    for ddl in index_ddl("v"):
        if not (no_time and "_by_time " in ddl):
            conn.execute(ddl)
    conn.execute("CREATE TABLE counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL)")
    conn.execute("CREATE TABLE pos (view TEXT PRIMARY KEY, position INTEGER NOT NULL)")
    return conn


def _calls(conn: sqlite3.Connection, calls: int, *, merged: bool) -> float:
    """Write `calls` run_at's rows, one commit each; return calls/s."""
    due = int(time.time() * 1000) + HOUR_MS
    insert_row = f"INSERT INTO v ({COLUMNS}) VALUES ({', '.join('?' * 17)})"  # noqa: S608
    if merged:
        position = (
            "INSERT INTO counts (state, n) VALUES ('#position', ?) "
            "ON CONFLICT (state) DO UPDATE SET n = excluded.n"
        )
    else:
        position = (
            "INSERT INTO pos (view, position) VALUES ('v', ?) "
            "ON CONFLICT (view) DO UPDATE SET position = excluded.position"
        )
    started = time.perf_counter()
    for _ in range(calls):
        job_id = str(ScheduledFunction.create_id(int(time.time() * 1000)))
        conn.execute("BEGIN")
        seq = conn.execute(
            "INSERT INTO stored_events (originator_id, originator_version, topic, state) "
            "VALUES (?, 1, ?, ?)",
            (job_id.replace("-", ""), TOPIC, STATE),
        ).lastrowid
        conn.execute("SELECT position FROM pos WHERE view = 'v'")
        row = (job_id, seq, due, "bench:noop", "action", b'["/tmp/sink",1]', None, due, due)
        conn.execute(insert_row, (*row, None, "pending", None, None, 1, None, None, 1))
        conn.execute(
            "INSERT INTO counts (state, n) VALUES ('pending', 1) "
            "ON CONFLICT (state) DO UPDATE SET n = counts.n + excluded.n"
        )
        conn.execute(position, (seq,))
        conn.execute("COMMIT")
    return calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per file")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (each runs every variant)")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as directory:
        for round_ in range(args.rounds):
            for name, how in VARIANTS.items():
                path = Path(directory) / f"{name.replace(' ', '_')}-{round_}.db"
                shape = {k: v for k, v in how.items() if k != "merged"}
                conn = _open(path, **shape)
                try:
                    rates[name].append(_calls(conn, args.calls, merged=how.get("merged", False)))
                finally:
                    conn.close()
    base = sorted(rates["current"])[len(rates["current"]) // 2]
    for name, got in rates.items():
        got.sort()
        median = got[len(got) // 2]
        print(
            f"{name:16} {median:7,.0f} calls/s ({got[0]:,.0f}-{got[-1]:,.0f})  "
            f"{median / base:5.2f}x current"
        )


if __name__ == "__main__":
    main()
