"""The audit commands of the real CLI: replay [--as-of], history's timeline, ls filters, stats,
cancel-all, and TIME values; stores prepared in-process, the CLI run as a subprocess.

Stores are built on a FakeClock set near the real time, because the CLI reads the real clock
(stats' lag, retention in replay): the tests stay true whatever the day they run.
"""

from __future__ import annotations

import contextlib
import os
import pty
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from schedlog import App
from schedlog.projections.schema import TABLE
from schedlog.testing import FakeClock
from tests.process.test_cli import SCHEDLOG, assert_clean_failure, clean_env, cli, cli_json, iso

DAY = 24 * 60 * 60 * 1000
HOUR = 60 * 60 * 1000

pytestmark = pytest.mark.process


def real_now_s() -> int:
    """The real time in ms, rounded down to a whole second (clean ISO strings)."""
    return time.time_ns() // 1_000_000_000 * 1000


def noop(ctx, *args, **kwargs) -> None:
    del ctx, args, kwargs


def claim(app: App, job_id: str, at_ms: int) -> None:
    """Start `job_id` on another node, as an executor claims an action (S17); never finish it."""
    job = app.store.load_job(job_id)
    assert job is not None
    job.start("other-node:1:abc", at_ms, at_ms + HOUR)
    app.save(job)


@dataclass
class Audit:
    url: str
    now: int  # the FakeClock's start
    ids: dict[str, str]
    fanout_children: list[str]
    node: str
    events: int  # job events in the log


@pytest.fixture
def audit(tmp_path: Path) -> Audit:
    """A store with a parent and two children (one fails), a retried mutation, a canceled job,
    a fan-out of 12 children and a pending job a day away."""
    now = real_now_s()
    url = f"sqlite://{tmp_path / 'audit.db'}"
    clock = FakeClock(now_ms=now)
    app = App(store=url, clock=clock)

    @app.mutation(name="audit:parent")
    def parent(ctx) -> None:
        ctx.scheduler.run_after(1_000, "audit:child", 1)
        ctx.scheduler.run_after(2_000, "audit:child", 2)

    @app.action(name="audit:child")
    def child(ctx, n: int) -> None:
        if n == 2:
            raise RuntimeError("child two [red]fails[/red]\nsecond line of the message")

    app.mutation(name="audit:flaky")(noop)

    @app.mutation(name="audit:fanout")
    def fanout(ctx) -> None:
        for i in range(12):
            ctx.scheduler.run_after(DAY, "audit:child", 100 + i)

    ids = {
        "parent": app.scheduler.run_after(100, parent),
        "flaky": app.scheduler.run_after(500, "audit:flaky", tag="x"),
        "canceled": app.scheduler.run_after(30_000, child, 0),
        "fanout": app.scheduler.run_after(5_000, fanout),
        "later": app.scheduler.run_after(DAY, child, 3),
    }
    app.scheduler.cancel(ids["canceled"])
    # A version conflict as the executor records it (S15): attempt 1 retried at +500, next run +800.
    job = app.store.load_job(ids["flaky"])
    assert job is not None
    job.retry(
        at_ms=now + 500, error="ConflictError: lost the race\nTraceback ...", next_run_ms=now + 800
    )
    app.save(job)
    try:
        app.start()
        for step in (100, 700, 300, 1_000, 2_900):  # +100, +800, +1100, +2100, +5000
            clock.advance(step)
            app.wait_until_idle()
        children = app.children(ids["parent"])
        assert len(children) == 2
        ids["child1"], ids["child2"] = children
        fanout_children = app.children(ids["fanout"])
        node = next(e["node_id"] for e in app.history(ids["child2"]) if e["type"] == "Started")
        everything = [d["_id"] for d in app.scheduled_functions.query(limit=1000).items]
        events = sum(len(app.history(job_id)) for job_id in everything)
    finally:
        app.close()
    return Audit(url, now, ids, fanout_children, node, events)


def ls_ids(url: str, *args: str) -> list[str]:
    return [d["_id"] for d in cli_json("--store", url, "ls", "--limit", "1000", *args)]


def rows(stdout: str) -> list[list[str]]:
    """The body rows of the rich tables in `stdout`, as lists of stripped cells."""
    lines = [line for line in stdout.splitlines() if line.count("│") > 2]
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines]


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {state: n for state, n in counts.items() if n}


# replay


def test_replay_rebuilds_a_damaged_view_and_counts_events(audit: Audit) -> None:
    db = audit.url.removeprefix("sqlite://")
    with sqlite3.connect(db) as conn:
        conn.execute(f"DELETE FROM {TABLE} WHERE id = ?", (audit.ids["later"],))
    conn.close()
    before = ls_ids(audit.url)
    assert audit.ids["later"] not in before

    result = cli("--store", audit.url, "replay")
    assert result.returncode == 0, result.stderr
    assert f"rebuilt the view from the log: {audit.events} job events applied" in result.stdout
    assert "pending 13" in result.stdout  # later and the fan-out's 12 children
    assert result.stderr == ""  # no progress bar without a terminal
    after = ls_ids(audit.url)
    assert sorted(after) == sorted([*before, audit.ids["later"]])

    report = cli_json("--store", audit.url, "replay", "--json")  # --json after the command too
    assert report["events_applied"] == audit.events
    assert nonzero(report["counts"]) == {"canceled": 1, "failed": 1, "pending": 13, "success": 4}


def test_replay_as_of_shows_the_past_and_leaves_the_live_view(audit: Audit) -> None:
    live = cli_json("--store", audit.url, "ls", "--limit", "1000")
    ids = audit.ids

    past = cli_json("--store", audit.url, "replay", "--as-of", str(audit.now + 100))
    states = {d["_id"]: d["state"]["kind"] for d in past["scheduled_functions"]}
    assert past["as_of"] == audit.now + 100
    assert states == {
        ids["parent"]: "success",
        ids["child1"]: "pending",  # born at +100, run at +1100
        ids["child2"]: "pending",
        ids["flaky"]: "pending",
        ids["canceled"]: "canceled",
        ids["fanout"]: "pending",
        ids["later"]: "pending",
    }
    assert past["counts"]["pending"] == 5
    assert past["truncated"] is False

    table = cli("--store", audit.url, "replay", "--as-of", iso(audit.now + 1_100))
    assert table.returncode == 0, table.stderr
    assert f"_scheduled_functions as of {iso(audit.now + 1_100)}" in table.stdout
    assert f"as of {iso(audit.now + 1_100)} ({audit.now + 1_100}):" in table.stdout
    then = {row[0]: row[2] for row in rows(table.stdout)}
    assert (then[ids["child1"]], then[ids["child2"]], then[ids["flaky"]]) == (
        "success",
        "pending",
        "success",
    )
    totals = "jobs then: canceled 1, failed 0, inProgress 0, pending 3, success 3, total 7"
    assert totals in table.stdout

    args = ("--as-of", iso(audit.now + 1_100), "--state", "pending", "--limit", "2")
    filtered = cli_json("--store", audit.url, "replay", *args)
    assert [d["_id"] for d in filtered["scheduled_functions"]] == [ids["child2"], ids["fanout"]]
    assert filtered["truncated"] is True

    empty = cli_json("--store", audit.url, "replay", "--as-of", str(audit.now - 1))
    assert empty["scheduled_functions"] == []
    assert empty["events_applied"] == 0
    assert cli_json("--store", audit.url, "ls", "--limit", "1000") == live

    usage = cli("--store", audit.url, "replay", "--state", "pending")  # filters need --as-of
    assert usage.returncode == 2
    assert "need --as-of" in usage.stderr


def run_on_pty(
    args: list[str], *, stdin_text: str | None = None, tty: str = "stderr"
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the CLI with stdin or stderr on a pseudo-terminal; return it and what the pty got."""
    master, slave = pty.openpty()
    seen: list[bytes] = []

    def read() -> None:  # until the child's end of the pty closes (EIO)
        with contextlib.suppress(OSError):
            while chunk := os.read(master, 4096):
                seen.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    streams: dict[str, Any] = dict.fromkeys(("stdin", "stdout", "stderr"), subprocess.PIPE)
    streams[tty] = slave
    env = clean_env(TERM="xterm", COLUMNS="120")
    try:
        with subprocess.Popen([*SCHEDLOG, *args], text=True, env=env, **streams) as proc:
            os.close(slave)
            if stdin_text is not None:
                os.write(master, stdin_text.encode())
            out, err = proc.communicate(timeout=60)
        reader.join(timeout=10)
    finally:
        os.close(master)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return result, b"".join(seen).decode(errors="replace")


def test_replay_shows_a_progress_bar_on_a_terminal_for_a_long_log(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'long.db'}"
    clock = FakeClock(now_ms=real_now_s())
    app = App(store=url, clock=clock)

    @app.mutation(name="long:fanout")
    def fanout(ctx) -> None:
        for _ in range(700):
            ctx.scheduler.run_after(DAY, "long:noop")

    app.action(name="long:noop")(noop)
    for _ in range(3):
        app.scheduler.run_after(0, fanout)
    try:
        app.start()
        app.wait_until_idle()
    finally:
        app.close()
    events = 3 * 3 + 3 * 700  # three fan-outs (Scheduled, Started, Completed), their children

    result, terminal = run_on_pty(["--store", url, "replay"])
    assert result.returncode == 0, result.stderr
    assert f"{events} job events applied" in result.stdout
    assert "replaying the log" in terminal
    assert f"/{events}" in terminal  # M/N of the log's positions
    assert f"{events}/{events}" in terminal  # ...up to the end

    piped = cli("--store", url, "replay", "--as-of", str(clock.now_ms()), "--json")
    assert piped.returncode == 0
    assert piped.stderr == ""  # no bar without a terminal
    assert orjson.loads(piped.stdout)["counts"]["pending"] == 2_100


# history


def test_history_is_a_timeline_with_attempts_nodes_errors_parent_and_children(
    audit: Audit,
) -> None:
    ids, now = audit.ids, audit.now
    child = cli("--store", audit.url, "history", ids["child2"])
    assert child.returncode == 0, child.stderr
    out = child.stdout
    assert f"history of {ids['child2']} (audit:child)" in out
    # time, event, attempt, node, detail
    assert rows(out) == [
        [iso(now + 100), "Scheduled", "", "", f"audit:child(2), action, due {iso(now + 2_100)}"],
        [iso(now + 2_100), "Started", "1", audit.node, f"lease until {iso(now + 32_100)}"],
        [
            iso(now + 2_100),
            "Completed",
            "1",
            "",
            "failed: RuntimeError: child two [red]fails[/red]",
        ],
    ]  # the error printed, not styled
    assert "second line" not in out  # an error's first line only
    assert f"parent: {ids['parent']}" in out
    assert "children: none" in out

    flaky = cli("--store", audit.url, "history", ids["flaky"]).stdout
    timeline = rows(flaky)
    assert [row[1:3] for row in timeline] == [
        ["Scheduled", ""],
        ["Retried", "1"],
        ["Started", "2"],
        ["Completed", "2"],
    ]
    assert timeline[1][0] == iso(now + 500)
    assert timeline[1][4] == f"next run {iso(now + 800)}: ConflictError: lost the race"
    assert "Traceback" not in flaky
    assert 'audit:flaky(tag="x"), mutation' in flaky
    assert "parent: none" in flaky

    parent = cli("--store", audit.url, "history", ids["parent"]).stdout
    assert f"children: {ids['child1']}, {ids['child2']}" in parent

    many = cli("--store", audit.url, "history", ids["fanout"]).stdout
    first, last = audit.fanout_children[0], audit.fanout_children[-1]
    assert f"children: 12 (first: {first}, last: {last};" in many
    assert audit.fanout_children[5] not in many

    canceled = cli("--store", audit.url, "history", ids["canceled"]).stdout
    assert "Canceled" in canceled
    assert "while in progress" not in canceled  # canceled while pending


def test_history_json_has_events_parent_and_children(audit: Audit) -> None:
    report = cli_json("--store", audit.url, "history", audit.ids["parent"])
    assert report["id"] == audit.ids["parent"]
    assert report["parent"] is None
    assert report["children"] == [audit.ids["child1"], audit.ids["child2"]]
    assert [e["type"] for e in report["events"]] == ["Scheduled", "Started", "Completed"]
    child = cli_json("--store", audit.url, "history", audit.ids["child2"])
    assert child["parent"] == audit.ids["parent"]
    assert child["events"][-1]["error"].startswith("RuntimeError: child two")
    assert "second line" in child["events"][-1]["error"]  # JSON keeps the whole error


# ls filters


def test_ls_filters_by_parent_time_range_and_order(audit: Audit) -> None:
    ids, now = audit.ids, audit.now
    assert ls_ids(audit.url, "--parent", ids["parent"]) == [ids["child1"], ids["child2"]]
    assert ls_ids(audit.url, "--parent", ids["parent"], "--order", "desc") == [
        ids["child2"],
        ids["child1"],
    ]
    assert ls_ids(audit.url, "--parent", ids["child1"]) == []
    # --after is inclusive, --before exclusive, on scheduledTime; ISO and epoch ms alike
    window = ls_ids(audit.url, "--after", iso(now + 500), "--before", str(now + 2_100))
    assert window == [ids["flaky"], ids["child1"]]
    assert ls_ids(audit.url, "--after", str(now + 2_100), "--before", iso(now + 5_001)) == [
        ids["child2"],
        ids["fanout"],
    ]
    assert ls_ids(audit.url, "--before", str(now + 100)) == []
    newest = ls_ids(audit.url, "--order", "desc", "--limit", "1")
    assert len(newest) == 1
    assert newest[0] in {ids["later"], *audit.fanout_children}
    assert ls_ids(
        audit.url, "--after", str(now + DAY - 1), "--name", "audit:child", "--parent", ids["fanout"]
    ) == (audit.fanout_children)

    table = cli("--store", audit.url, "ls", "--limit", "2")
    assert "the first 2; more match (raise --limit)" in table.stdout
    unknown = "00000000-0000-4000-8000-000000000000"
    assert_clean_failure(cli("--store", audit.url, "ls", "--parent", unknown), f"'{unknown}'")


# stats


def stats_store(tmp_path: Path, behind_ms: int) -> str:
    """A store with two jobs due `behind_ms` ago by the real clock (none if 0), never run, one
    job due in an hour and one running."""
    url = f"sqlite://{tmp_path / 'stats.db'}"
    start = real_now_s() - behind_ms
    app = App(store=url, clock=FakeClock(now_ms=start))
    app.action(name="stats:job")(noop)
    try:
        for _ in range(2 if behind_ms else 0):
            app.scheduler.run_after(0, "stats:job")
        app.scheduler.run_after(HOUR + behind_ms, "stats:job")  # not due yet
        claim(app, app.scheduler.run_after(HOUR + behind_ms, "stats:job"), start)
    finally:
        app.close()
    return url


@pytest.mark.parametrize(
    ("behind_ms", "health"),
    [(0, "healthy"), (60_000, "warning"), (400_000, "error")],
)
def test_stats_counts_lag_running_and_health(tmp_path: Path, behind_ms: int, health: str) -> None:
    url = stats_store(tmp_path, behind_ms)
    before = real_now_s()
    report = cli_json("--store", url, "stats")
    assert report["health"] == health
    assert report["running"] == 1
    assert nonzero(report["counts"]) == {"inProgress": 1, "pending": 3 if behind_ms else 1}
    assert behind_ms <= report["lag_ms"] < behind_ms + 60_000
    assert report["now"] >= before

    table = cli("--store", url, "stats", "--json")  # --json after the command: JSON
    assert orjson.loads(table.stdout)["health"] == health
    table = cli("--store", url, "stats")
    assert table.returncode == 0, table.stderr
    values = {row[0]: row[1] for row in rows(table.stdout)}
    assert (values["health"], values["running"], values["inProgress"]) == (health, "1", "1")
    assert values["total"] == str(4 if behind_ms else 2)
    assert float(values["lag"].removesuffix(" s")) >= behind_ms / 1000
    assert "healthy <= 20 s behind, warning <= 300 s, error beyond" in table.stdout


# cancel-all


@pytest.fixture
def pending(tmp_path: Path) -> tuple[str, dict[str, str], int]:
    """Pending jobs of two names an hour and two away, one running, one finished."""
    now = real_now_s()
    url = f"sqlite://{tmp_path / 'pending.db'}"
    app = App(store=url, clock=FakeClock(now_ms=now))
    app.action(name="c:a")(noop)
    app.action(name="c:b")(noop)
    ids = {
        "done": app.scheduler.run_after(0, "c:a"),
        "a1": app.scheduler.run_after(HOUR, "c:a"),
        "a2": app.scheduler.run_after(2 * HOUR, "c:a"),
        "b1": app.scheduler.run_after(HOUR, "c:b"),
        "running": app.scheduler.run_after(HOUR, "c:b"),
    }
    try:
        app.start()
        app.wait_until_idle()
        app.stop()
        claim(app, ids["running"], now)
    finally:
        app.close()
    return url, ids, now


def states(url: str) -> dict[str, str]:
    return {d["_id"]: d["state"]["kind"] for d in cli_json("--store", url, "ls")}


def test_cancel_all_refuses_without_a_terminal_or_yes(
    pending: tuple[str, dict[str, str], int],
) -> None:
    url, ids, _ = pending
    before = states(url)
    result = cli("--store", url, "cancel-all")
    assert_clean_failure(result, "not canceling 4 jobs (pending or running) without confirmation")
    assert "pass --yes" in result.stderr
    assert_clean_failure(cli("--store", url, "cancel-all", "--json"), "pass --yes")
    assert states(url) == before  # nothing canceled
    assert before[ids["running"]] == "inProgress"


def test_cancel_all_with_filters_and_yes(pending: tuple[str, dict[str, str], int]) -> None:
    url, ids, now = pending
    result = cli(
        "--store", url, "cancel-all", "--name", "c:a", "--before", iso(now + 90 * 60_000), "--yes"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"canceled 1 job (pending or running, of c:a, due before {iso(now + 90 * 60_000)})"
    )
    after = states(url)
    assert after[ids["a1"]] == "canceled"
    assert after[ids["a2"]] == "pending"  # due after --before
    assert after[ids["b1"]] == "pending"  # another name
    assert after[ids["done"]] == "success"

    report = cli_json("--store", url, "cancel-all", "--name", "c:b", "-y")
    assert report == {"canceled": 2, "matched": 2, "name": "c:b", "before": None}
    after = states(url)
    assert after[ids["b1"]] == after[ids["running"]] == "canceled"
    history = cli("--store", url, "history", ids["running"]).stdout
    assert "while in progress (not interrupted)" in history  # S21

    nothing = cli("--store", url, "cancel-all", "--name", "c:b")  # nothing left: no question
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout.strip() == "canceled 0 jobs (pending or running, of c:b)"


@pytest.mark.parametrize(("answer", "canceled"), [("n\n", False), ("y\n", True)])
def test_cancel_all_asks_on_a_terminal(
    pending: tuple[str, dict[str, str], int], answer: str, canceled: bool
) -> None:
    url, ids, _ = pending
    result, _ = run_on_pty(
        ["--store", url, "cancel-all", "--before", str(10**13)], stdin_text=answer, tty="stdin"
    )
    assert "Cancel 4 jobs (pending or running, due before" in result.stderr
    after = states(url)
    if canceled:
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("canceled 4 jobs")
        assert {after[ids[k]] for k in ("a1", "a2", "b1", "running")} == {"canceled"}
    else:
        assert result.returncode == 1
        assert "not confirmed; nothing canceled" in result.stderr
        assert after[ids["a1"]] == "pending"
        assert after[ids["running"]] == "inProgress"


# TIME values


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["ls", "--after"], "--after"),
        (["ls", "--before"], "--before"),
        (["cancel-all", "--yes", "--before"], "--before"),
        (["replay", "--as-of"], "--as-of"),
    ],
)
def test_bad_time_exits_1_with_a_message(audit: Audit, args: list[str], option: str) -> None:
    before = states(audit.url)
    naive = cli("--store", audit.url, *args, "2027-01-15T08:00:00")
    assert_clean_failure(naive, f"Error: {option}: '2027-01-15T08:00:00' has no UTC offset")
    garbage = cli("--store", audit.url, *args, "next tuesday")
    assert_clean_failure(garbage, f"Error: {option}: 'next tuesday' is not a time")
    assert "epoch milliseconds" in garbage.stderr
    assert states(audit.url) == before
