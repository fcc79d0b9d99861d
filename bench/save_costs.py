"""What one durable call costs on SQLite: time, CPU, latency spread, and WAL pages by table.

The diagnostics behind issue 6's scheduling and cancel figures, in one command. On a fresh
SQLite store (no runtime started), it prints:

- raw SQLite, one INSERT + COMMIT per call (the fsync floor), for scale;
- `run_at` (a job due in an hour) and `cancel`, one call at a time: calls/s, wall and CPU
  (user, system) per call, and the p50 / p99 / max of one call;
- `run_at` from `--threads` threads (group commit): calls/s, wall and CPU per call (CPU near
  the wall time: the calls' Python runs one at a time under the GIL), and saves per commit;
- the pages one `run_at` and one `cancel` write to the WAL, by table or index (read from the
  WAL's frame headers and SQLite's `dbstat`): each page is a frame written before the fsync.

    .venv/bin/python bench/save_costs.py                 # 5,000 calls
    .venv/bin/python bench/save_costs.py --calls 20000 --threads 8
    .venv/bin/python bench/save_costs.py --synchronous normal   # the opt-in: no fsync per commit

With `--synchronous normal` both the raw row and schedlog's store run with SQLite's
`synchronous=NORMAL` (`sqlite://...?synchronous=normal`, an opt-in; see the README's "Stores").
"""

from __future__ import annotations

import argparse
import collections
import os
import sqlite3
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schedlog import App  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable

HOUR_MS = 3_600_000
WAL_HEADER = 32
FRAME_HEADER = 24


def _app(store: Path, synchronous: str) -> App:
    app = App(f"sqlite://{store}?synchronous={synchronous}")

    @app.action(name="bench:noop")
    def noop(ctx: object, index: int) -> None:
        del ctx, index

    return app


def _raw(path: Path, calls: int, synchronous: str) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    started = time.perf_counter()
    for _ in range(calls):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (v) VALUES (?)", ("x" * 100,))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return calls / elapsed


def _timed(label: str, calls: int, call: Callable[[int], object]) -> None:
    """Run `call(i)` for i < calls; print the rate, wall and CPU per call, and the spread."""
    one = []
    cpu = os.times()
    started = time.perf_counter()
    for i in range(calls):
        t = time.perf_counter()
        call(i)
        one.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    after = os.times()
    one.sort()

    def ms(q: float) -> float:
        return one[int(q * (len(one) - 1))] * 1000

    print(
        f"{label:8} {calls / elapsed:8,.0f} calls/s   wall {elapsed / calls * 1e6:5.0f} us   "
        f"user {(after.user - cpu.user) / calls * 1e6:4.0f} us   "
        f"system {(after.system - cpu.system) / calls * 1e6:4.0f} us   "
        f"one call p50 {ms(0.5):.2f} / p99 {ms(0.99):.2f} / max {one[-1] * 1000:.2f} ms"
    )


def _threads(app: App, calls: int, threads: int, due: int) -> None:
    """Schedule `calls` jobs from `threads` threads; print the rate and saves per commit."""
    group = app.store.recorder._group  # noqa: SLF001 - counting the group commit's rounds
    commit = group._commit  # noqa: SLF001
    sizes: list[int] = []

    def counted(saves: list) -> None:
        sizes.append(len(saves))
        commit(saves)

    group._commit = counted  # noqa: SLF001

    def work() -> None:
        for i in range(calls // threads):
            app.scheduler.run_at(due, "bench:noop", i)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    cpu = os.times()
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    after = os.times()
    group._commit = commit  # noqa: SLF001
    alone = sum(1 for n in sizes if n == 1)
    print(
        f"run_at from {threads} threads: {calls / elapsed:,.0f} calls/s   "
        f"wall {elapsed / calls * 1e6:5.0f} us   "
        f"user {(after.user - cpu.user) / calls * 1e6:4.0f} us   "
        f"system {(after.system - cpu.system) / calls * 1e6:4.0f} us per call; "
        f"{sum(sizes) / len(sizes):.1f} saves per commit ({len(sizes):,} commits, "
        f"{alone / len(sizes):.0%} of them of one save)"
    )


def _pages(app: App, store: Path, label: str, calls: int, call: Callable[[int], object]) -> None:
    """Print the WAL frames `calls` calls write, per call, by the table or index of each page."""
    writer = app.store.recorder.datastore.pool.writer()
    assert writer is not None  # noqa: S101 - a file store
    raw = writer._sqlite_conn  # noqa: SLF001
    raw.execute("PRAGMA wal_autocheckpoint = 0")
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for i in range(calls):
        call(i)
    wal = Path(f"{store}-wal").read_bytes()
    names = {page: name for name, page in raw.execute("SELECT name, pageno FROM dbstat")}
    by_table: collections.Counter[str] = collections.Counter()
    (page_size,) = struct.unpack(">I", wal[8:12])  # the WAL header's page size: the file's own
    offset = WAL_HEADER
    while offset + FRAME_HEADER <= len(wal):
        (page,) = struct.unpack(">I", wal[offset : offset + 4])
        by_table[names.get(page, f"page {page}")] += 1
        offset += FRAME_HEADER + page_size
    raw.execute("PRAGMA wal_autocheckpoint = 1000")
    print(f"{label}: {sum(by_table.values()) / calls:.1f} WAL pages per call")
    for name, frames in by_table.most_common():
        print(f"    {frames / calls:5.2f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per measurement")
    parser.add_argument("--threads", type=int, default=8, help="threads for the group commit")
    parser.add_argument("--tmp", default=None, help="where the stores go (default: $TMPDIR)")
    parser.add_argument(
        "--synchronous",
        choices=("full", "normal"),
        default="full",
        help="SQLite's synchronous for both stores (default full: every commit fsynced)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.tmp) as directory:
        tmp = Path(directory)
        raw = _raw(tmp / "raw.db", args.calls, args.synchronous)
        print(f"synchronous={args.synchronous.upper()}")
        print(f"raw SQLite INSERT + COMMIT: {raw:,.0f} calls/s")
        store = tmp / "schedlog.db"
        app = _app(store, args.synchronous)
        try:
            due = int(time.time() * 1000) + HOUR_MS
            for i in range(200):  # warm up: connections, statements, pages
                app.scheduler.run_at(due, "bench:noop", i)
            ids: list[str] = []
            _timed(
                "run_at",
                args.calls,
                lambda i: ids.append(app.scheduler.run_at(due, "bench:noop", i)),
            )
            _timed("cancel", args.calls, lambda i: app.scheduler.cancel(ids[i]))
            _threads(app, args.calls, args.threads, due)
            more = [app.scheduler.run_at(due, "bench:noop", i) for i in range(100)]
            _pages(app, store, "run_at", 50, lambda i: app.scheduler.run_at(due, "bench:noop", i))
            _pages(app, store, "cancel", 50, lambda i: app.scheduler.cancel(more[i]))
        finally:
            app.close()


if __name__ == "__main__":
    main()
