"""Several worker nodes on one PostgreSQL database, one of them SIGKILLed mid-run.

Three `schedlog run` nodes share a fresh schema; this process (a fourth) schedules 2,000 jobs
(mutations that change user aggregates and schedule a child; actions with a side effect outside
the store), reads node 0's output and SIGKILLs it in the middle, and the survivors finish the
work. Checks: the guarantees of the crash test (every job terminal, mutations exactly once,
actions at most once, cut-off actions failed with the transient error, the view equal to the
log), and that the work was shared.
"""

from __future__ import annotations

import collections
import os
import random
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import pg_url
from tests.process.crashapp import build_app
from tests.process.test_crash import (
    LEASE_MS,
    ROOT,
    Worker,
    check_guarantees,
    schedule_workload,
    wait_all_terminal,
)

pytestmark = [pytest.mark.process, pytest.mark.pg, pytest.mark.timeout(600)]

NODES = 3


def started_by_node(store: str, effects: str) -> collections.Counter[str]:
    app = build_app(store, effects, LEASE_MS)
    try:
        counts: collections.Counter[str] = collections.Counter()
        page = app.scheduled_functions.query(limit=1000)
        while True:
            for doc in page.items:
                starts = [e for e in app.history(doc["_id"]) if e["type"] == "Started"]
                if starts:
                    counts[starts[-1]["node_id"]] += 1
            if page.cursor is None:
                return counts
            page = app.scheduled_functions.query(limit=1000, cursor=page.cursor)
    finally:
        app.close()


def test_three_nodes_share_the_work_and_survive_one_being_killed(
    tmp_path: Path, pg_server: str
) -> None:
    store = pg_url(f"{pg_server}_{uuid.uuid4().hex[:10]}")
    effects = tmp_path / "effects.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SCHEDLOG_", "COLUMNS"))},
        "SCHEDLOG_STORE": store,
        "CRASH_EFFECTS": str(effects),
        "CRASH_LEASE_MS": str(LEASE_MS),
        "PYTHONPATH": str(ROOT),
        "PYTHONFAULTHANDLER": "1",
    }
    logs = [(tmp_path / f"node-{i}.log").open("a") for i in range(NODES)]
    nodes = [Worker(env, stderr=log) for log in logs]
    started = time.monotonic()
    for node in nodes:
        node.start()
    scheduler = build_app(store, str(effects), LEASE_MS)
    try:
        ids = schedule_workload(
            scheduler,
            random.Random(5),
            mutations=1_400,
            actions=600,
            spread_ms=4_000,
            accounts_count=200,
        )
    finally:
        scheduler.close()
    assert len(ids) == 2_000
    for _ in range(150):  # in the middle of the work: kill node 0 for good
        if nodes[0].next_line(timeout=10) is None:
            break
    nodes[0].kill()
    wait_all_terminal(store, str(effects), deadline_s=180)
    for node in nodes[1:]:
        assert node.terminate() == 0
    for log in logs:
        log.close()
    stats = check_guarantees(store, effects)
    shares = started_by_node(store, str(effects))
    elapsed = time.monotonic() - started
    print(f"\n3 nodes on PostgreSQL, node 0 killed: {stats}; started per node {dict(shares)}; "
          f"{elapsed:.1f} s")  # fmt: skip
    assert stats["jobs"] == len(ids) + stats["mutations ok"]  # one child per successful mutation
    assert len(shares) == NODES  # every node, the killed one included, ran some of the work
    assert min(shares.values()) >= 50
