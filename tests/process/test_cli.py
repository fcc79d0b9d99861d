"""The real `schedlog` command line, in subprocesses: demo, run (S11b), ls, show, history, cancel.

The audit commands (replay, stats, cancel-all, ls filters, TIME values) are in test_cli_audit.py.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from schedlog import App
from schedlog.projections.schema import TABLE
from schedlog.testing import FakeClock
from tests.conftest import PG_DSN, pg_url

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
T0 = 1_800_000_000_000
SCHEDLOG = (sys.executable, "-m", "schedlog")
TERMINAL = {"success", "failed", "canceled"}
READY = re.compile(r"^schedlog worker (\S+) running on (\S+)$")
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".typecheck",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "__pycache__",
    "build",
    "dist",
    "*.egg-info",
    "*.db",
    "*.db-*",
    "*.sqlite",
    "*.sqlite-*",
)


def clean_env(**extra: str) -> dict[str, str]:
    # COLUMNS (set under pytest) would narrow rich's tables and fold the words we look for.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SCHEDLOG_") and k not in {"COLUMNS", "LINES"}
    }
    env.update(extra)
    return env


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SCHEDLOG, *args],
        stdin=subprocess.DEVNULL,  # never the terminal pytest runs in: cancel-all would ask
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=clean_env(**(env or {})),
        check=False,
    )


def cli_json(*args: str, env: dict[str, str] | None = None) -> Any:
    result = cli("--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def assert_clean_failure(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# a. The README's quick start: a fresh venv, `pip install`, `schedlog demo`.


@pytest.mark.process
@pytest.mark.timeout(600)
def test_demo_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO_ROOT, src, ignore=COPY_IGNORE)  # pip must not write into the work tree
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(src)],
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    assert pip.returncode == 0, pip.stderr
    workdir = tmp_path / "run"
    workdir.mkdir()
    schedlog = str(venv / "bin" / "schedlog")

    started = time.monotonic()
    demo = subprocess.run(
        [schedlog, "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=workdir,
        env=clean_env(),
        check=False,
    )
    elapsed = time.monotonic() - started

    assert demo.returncode == 0, demo.stderr
    for word in ("demo:deposit", "success", "failed", "canceled", "card declined", "Started"):
        assert word in demo.stdout
    assert "account balance after demo:deposit: 250 cents" in demo.stdout
    assert (workdir / "schedlog-demo.sqlite").is_file()
    assert elapsed < 15

    # A second run starts from a fresh file: exactly the demo's four jobs again.
    again = subprocess.run(
        [schedlog, "--json", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=workdir,
        env=clean_env(),
        check=False,
    )
    assert again.returncode == 0, again.stderr
    report = orjson.loads(again.stdout)
    states = {d["name"]: d["state"]["kind"] for d in report["scheduled_functions"]}
    assert states == {
        "demo:deposit": "success",
        "demo:send_receipt": "success",
        "demo:charge_card": "failed",
        "demo:send_reminder": "canceled",
    }
    assert report["balance"] == 250
    assert [e["type"] for e in next(iter(report["history"].values()))] == [
        "Scheduled",
        "Started",
        "Completed",
    ]


# b. S11b: one process schedules, a `schedlog run` worker on the same SQLite file runs.


class Worker:
    """A `schedlog run` subprocess whose stdout lines are read with a deadline."""

    def __init__(self, db: Path, log: Path) -> None:
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [*SCHEDLOG, "--store", f"sqlite://{db}", "run", "workerapp:app", "--grace", "5"],
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=clean_env(),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout_s: float = 20) -> str:
        line = self.lines.get(timeout=timeout_s)
        assert line is not None, "the worker exited early"
        return line

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._log.close()


def stand_in(*args: object) -> None:
    raise AssertionError(f"the scheduling process must not run jobs, got {args!r}")


def wait_terminal(app: App, job_id: str, deadline_s: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + deadline_s
    while True:
        doc = app.scheduled_functions.get(job_id)
        assert doc is not None
        if doc["state"]["kind"] in TERMINAL:
            return doc
        assert time.monotonic() < deadline, (
            f"job {job_id} still {doc['state']} after {deadline_s} s"
        )
        time.sleep(0.02)


@pytest.mark.process
@pytest.mark.timeout(120)
def test_worker_process_runs_jobs_scheduled_by_another_process(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    marker = tmp_path / "marker.txt"
    worker = Worker(db, tmp_path / "worker.log")
    web = None
    try:
        ready = READY.match(worker.next_line())
        assert ready is not None
        worker_node, store_url = ready.groups()
        assert store_url == f"sqlite://{db}"

        # The "web process": same store, same names, runtime never started.
        web = App(store=f"sqlite://{db}")
        web.mutation(name="workerapp:record")(stand_in)
        web.action(name="workerapp:write_marker")(stand_in)
        mutation = web.scheduler.run_after(0, "workerapp:record", "from-the-web")
        action = web.scheduler.run_after(0, "workerapp:write_marker", str(marker), "hello")

        for job_id in (mutation, action):
            doc = wait_terminal(web, job_id)
            assert doc["state"] == {"kind": "success"}
            started = [e for e in web.history(job_id) if e["type"] == "Started"]
            assert [e["node_id"] for e in started] == [worker_node]
            assert worker_node != web.node_id
            assert started[0]["time"] - doc["scheduledTime"] < 2_000  # S11b asks 100 ms
        assert marker.read_text(encoding="utf-8") == f"hello job={action}"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT state FROM stored_events WHERE topic = 'workerapp:Marker.Created'"
            ).fetchall()
        assert len(rows) == 1
        assert b"from-the-web" in rows[0][0]

        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=30) == 0
        assert worker.next_line() == f"schedlog worker {worker_node} stopped"
    finally:
        if web is not None:
            web.close()
        worker.close()


@pytest.mark.process
def test_run_rejects_a_target_that_is_not_an_app() -> None:
    assert_clean_failure(
        cli("run", "no_such_module_here:app"), "cannot import 'no_such_module_here'"
    )
    assert_clean_failure(cli("run", "json:dumps"), "not a schedlog App")
    assert_clean_failure(cli("run", "json"), "expected MODULE:APP")


def _importing_worker(tmp_path: Path, rest: str) -> subprocess.Popen[str]:
    """Start `schedlog run` on a module that blocks its import until a line on stdin, then
    runs `rest`; return once the import has begun."""
    (tmp_path / "slowapp.py").write_text(
        "import sys\n"
        "from schedlog import App\n"
        "print('importing', flush=True)\n"
        "sys.stdin.readline()  # the test says when the import may end\n" + rest,
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [*SCHEDLOG, "--store", f"sqlite://{tmp_path / 'jobs.db'}", "run", "slowapp:app"],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "importing\n"
    return proc


@pytest.mark.process
def test_a_sigterm_while_the_module_is_imported_stops_the_worker_cleanly(tmp_path: Path) -> None:
    """A supervisor's SIGTERM right after the spawn killed the worker (status -15) while the
    user's module was still being imported: the handler came after it."""
    proc = _importing_worker(tmp_path, "app = App()\n")
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate("go\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "running on" not in out  # never started
    assert re.fullmatch(r"schedlog worker \S+ stopped\n", out)


@pytest.mark.process
def test_a_second_sigterm_while_the_module_is_imported_ends_the_worker(tmp_path: Path) -> None:
    """The first asks for a stop once the import ends; a second (a hung import) was ignored."""
    proc = _importing_worker(tmp_path, "")  # stdin is never written: the import never ends
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        line = "-"
        while line and "received SIGTERM; stopping" not in line:  # handled: it logs it
            line = proc.stderr.readline()
        assert line, "the worker ended before it handled the first SIGTERM"
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert status == -signal.SIGTERM


@pytest.mark.process
def test_run_refuses_a_store_option_its_app_does_not_use(tmp_path: Path) -> None:
    """The worker ran on the module's own store, saying so only in its banner: an operator
    pointing it at another database did not notice. A bad URL was not even looked at."""
    fixed = tmp_path / "fixed.db"
    (tmp_path / "fixedapp.py").write_text(
        f"from schedlog import App\napp = App(store={f'sqlite://{fixed}'!r})\n", encoding="utf-8"
    )
    wanted = tmp_path / "wanted.db"
    result = cli("--store", f"sqlite://{wanted}", "run", "fixedapp:app", cwd=tmp_path)
    assert_clean_failure(
        result, f"fixedapp:app runs on 'sqlite://{fixed}', not on --store 'sqlite://{wanted}'"
    )
    assert not wanted.exists()
    assert_clean_failure(
        cli("--store", "bogus://x", "run", "fixedapp:app", cwd=tmp_path), "not a store URL"
    )


def test_a_store_url_names_the_same_store_whatever_its_spelling_or_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from schedlog.urls import parse_store_url

    monkeypatch.chdir(tmp_path)
    db = parse_store_url(f"sqlite://{tmp_path}/jobs.db")
    assert db.same_store(parse_store_url("sqlite://jobs.db?synchronous=normal"))
    assert not db.same_store(parse_store_url("sqlite://other.db"))
    assert parse_store_url("memory://").same_store(parse_store_url("memory://"))  # --store's
    assert not parse_store_url("memory://").same_store(db)
    pg = parse_store_url("postgresql://ann:secret@127.0.0.1:5432/test?schema=a")
    assert pg.same_store(parse_store_url("postgresql://bob@127.0.0.1/test?schema=a&pool_size=2"))
    assert not pg.same_store(parse_store_url("postgresql://ann@127.0.0.1:5432/test?schema=b"))
    assert not pg.same_store(db)


@pytest.mark.process
def test_demo_refuses_a_store_option(tmp_path: Path) -> None:
    result = cli("--store", "memory://", "demo", cwd=tmp_path)
    assert result.returncode == 2
    assert "use --path, not --store" in result.stderr
    assert list(tmp_path.iterdir()) == []


# c. ls, show, history, cancel on a store prepared in-process on a FakeClock.


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A store with one job in each state but inProgress; returns its URL and the job ids."""
    url = f"sqlite://{tmp_path / 'jobs.db'}"
    clock = FakeClock(now_ms=T0)
    app = App(store=url, clock=clock)

    @app.mutation(name="cli:ok")
    def ok(ctx: object, n: int) -> None:
        del ctx, n

    @app.action(name="cli:boom")
    def boom(ctx: object) -> None:
        raise ValueError("boom [bold]not markup[/bold]")

    @app.action(name="cli:later")
    def later(ctx: object) -> None:
        del ctx

    ids = {
        "ok": app.scheduler.run_after(10, ok, 1),
        "boom": app.scheduler.run_after(20, boom),
        "canceled": app.scheduler.run_after(30_000, later),
        "pending": app.scheduler.run_after(60_000, later),
    }
    app.scheduler.cancel(ids["canceled"])
    try:
        with app:
            clock.advance(10)  # each step stops on a due time, so Started is recorded at it
            app.wait_until_idle()
            clock.advance(10)
            app.wait_until_idle()
    finally:
        app.close()
    return url, ids


@pytest.mark.process
def test_ls_json_lists_every_job_by_scheduled_time(store: tuple[str, dict[str, str]]) -> None:
    url, ids = store
    docs = cli_json("--store", url, "ls")
    assert isinstance(docs, list)
    assert [d["_id"] for d in docs] == [ids["ok"], ids["boom"], ids["canceled"], ids["pending"]]
    assert [d["state"]["kind"] for d in docs] == ["success", "failed", "canceled", "pending"]
    assert docs[0]["args"] == [1]
    assert docs[0]["scheduledTime"] == T0 + 10


@pytest.mark.process
def test_ls_filters_by_state_name_and_limit(store: tuple[str, dict[str, str]]) -> None:
    url, ids = store
    failed = cli_json("--store", url, "ls", "--state", "failed")
    assert [d["_id"] for d in failed] == [ids["boom"]]
    later = cli_json("--store", url, "ls", "--name", "cli:later")
    assert [d["_id"] for d in later] == [ids["canceled"], ids["pending"]]
    first = cli("--json", "--store", url, "ls", "--limit", "2")
    assert first.returncode == 0, first.stderr
    assert [d["_id"] for d in orjson.loads(first.stdout)] == [ids["ok"], ids["boom"]]
    assert first.stderr.strip() == "the first 2; more match (raise --limit)"  # not silent
    every = cli("--json", "--store", url, "ls", "--limit", "4")
    assert len(orjson.loads(every.stdout)) == 4
    assert every.stderr == ""
    bad = cli("--store", url, "ls", "--state", "done")
    assert bad.returncode == 2
    assert "Invalid value for '--state'" in bad.stderr


@pytest.mark.process
def test_ls_reads_the_store_from_the_environment(store: tuple[str, dict[str, str]]) -> None:
    url, ids = store
    docs = cli_json("ls", env={"SCHEDLOG_STORE": url})
    assert len(docs) == len(ids)


@pytest.mark.process
def test_ls_table_shows_states_and_iso_times(store: tuple[str, dict[str, str]]) -> None:
    url, ids = store
    result = cli("--store", url, "ls")
    assert result.returncode == 0, result.stderr
    for job_id in ids.values():
        assert job_id in result.stdout
    for state in ("success", "failed", "canceled", "pending"):
        assert state in result.stdout
    assert iso(T0 + 10) in result.stdout  # scheduledTime, ISO 8601 UTC
    assert "ValueError: boom [bold]not markup[/bold]" in result.stdout  # printed, not styled
    assert "Traceback" not in result.stdout  # only the error's first line


@pytest.mark.process
def test_show_prints_one_document(store: tuple[str, dict[str, str]]) -> None:
    url, ids = store
    doc = cli_json("--store", url, "show", ids["boom"])
    assert isinstance(doc, dict)
    assert doc["_id"] == ids["boom"]
    assert doc["state"]["kind"] == "failed"
    assert doc["state"]["error"].startswith("ValueError: boom")
    assert "Traceback" in doc["state"]["error"]  # the full error, in JSON
    table = cli("--store", url, "show", ids["ok"])
    assert table.returncode == 0, table.stderr
    assert "cli:ok" in table.stdout
    assert iso(T0 + 10) in table.stdout


@pytest.mark.process
def test_history_lists_the_jobs_events(store: tuple[str, dict[str, str]]) -> None:
    url, ids = store
    report = cli_json("--store", url, "history", ids["ok"])
    assert report["id"] == ids["ok"]
    assert (report["parent"], report["children"]) == (None, [])
    events = report["events"]
    assert [e["type"] for e in events] == ["Scheduled", "Started", "Completed"]
    assert events[0]["time"] == T0
    assert events[1]["time"] == T0 + 10
    assert events[2]["outcome"] == "success"
    table = cli("--store", url, "history", ids["canceled"])
    assert table.returncode == 0, table.stderr
    assert "Scheduled" in table.stdout
    assert "Canceled" in table.stdout
    assert iso(T0) in table.stdout


@pytest.mark.process
def test_cancel_cancels_a_pending_job_once(store: tuple[str, dict[str, str]]) -> None:
    url, ids = store
    result = cli("--store", url, "cancel", ids["pending"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{ids['pending']}: canceled"
    doc = cli_json("--store", url, "show", ids["pending"])
    assert doc["state"]["kind"] == "canceled"
    events = cli_json("--store", url, "history", ids["pending"])["events"]
    assert [e["type"] for e in events] == ["Scheduled", "Canceled"]

    again = cli("--store", url, "cancel", ids["pending"])  # S23: idempotent
    assert again.returncode == 0, again.stderr
    assert "already canceled" in again.stdout
    finished = cli_json("--store", url, "cancel", ids["ok"])
    assert finished["state"] == {"kind": "success"}


@pytest.mark.process
def test_cancel_of_a_finished_job_gone_from_the_view_is_a_no_op_s23(
    store: tuple[str, dict[str, str]],
) -> None:
    url, ids = store
    with sqlite3.connect(url.removeprefix("sqlite://")) as db:  # as retention does (S28)
        db.execute(f"DELETE FROM {TABLE} WHERE id = ?", (ids["ok"],))
    result = cli("--store", url, "cancel", ids["ok"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"{ids['ok']}: already success; nothing to cancel (it has left the view; see `history`)"
    )
    assert cli_json("--store", url, "cancel", ids["ok"]) == {
        "_id": ids["ok"],
        "state": {"kind": "success"},
    }
    events = cli_json("--store", url, "history", ids["ok"])["events"]
    assert [e["type"] for e in events] == ["Scheduled", "Started", "Completed"]  # no Canceled


@pytest.mark.process
@pytest.mark.parametrize("command", ["show", "history", "cancel"])
def test_unknown_id_exits_1_with_a_message(store: tuple[str, dict[str, str]], command: str) -> None:
    url, _ = store
    unknown = str(uuid.uuid4())
    result = cli("--store", url, command, unknown)
    assert_clean_failure(result, f"Error: no scheduled function with id '{unknown}'")


@pytest.mark.process
def test_an_id_in_another_spelling_is_echoed_as_the_job_s_own(
    store: tuple[str, dict[str, str]],
) -> None:
    """Upper case or urn:uuid: name the same job; the output says its id as the runtime does."""
    url, ids = store
    assert cli_json("--store", url, "history", ids["ok"].upper())["id"] == ids["ok"]
    result = cli("--store", url, "cancel", f"urn:uuid:{ids['pending'].upper()}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{ids['pending']}: canceled"


@pytest.mark.process
def test_history_json_of_arguments_nested_past_orjson_s_limit(tmp_path: Path) -> None:
    """Accepted (S9 allows 250 levels), such a job's `history --json` raised orjson's
    "Recursion limit reached" (its events nest the arguments 4 levels deeper)."""
    url = f"sqlite://{tmp_path / 'deep.db'}"
    app = App(store=url)
    app.action(name="cli:deep")(lambda _ctx, _value: None)
    deep: list[Any] = []
    for _ in range(250):
        deep = [deep]
    job = app.scheduler.run_after(60_000, "cli:deep", deep)
    app.close()
    events = cli_json("--store", url, "history", job)["events"]
    assert [e["type"] for e in events] == ["Scheduled"]
    assert events[0]["args"] == [deep]


@functools.cache
def _ledger_class() -> type[Any]:
    """A user's aggregate class whose topic names a function's locals: no other process has it."""
    from eventsourcing.domain import Aggregate

    class Ledger(Aggregate):
        pass

    return Ledger


@pytest.mark.process
@pytest.mark.parametrize("command", [("show",), ("history",), ("cancel",), ("ls", "--parent")])
def test_the_id_of_a_users_aggregate_is_no_job_id(
    store: tuple[str, dict[str, str]], command: tuple[str, ...]
) -> None:
    """The CLI does not import the user's classes: it printed a 50-line TopicError instead."""
    url, _ = store
    app = App(store=url)
    ledger = _ledger_class()()
    app.save(ledger)
    app.close()
    result = cli("--store", url, *command, str(ledger.id))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"no scheduled function with id '{ledger.id}'" in result.stderr


@pytest.mark.process
def test_bad_store_url_exits_1_with_a_message(tmp_path: Path) -> None:
    assert_clean_failure(cli("--store", "mysql://db/x", "ls"), "is not a store URL")
    missing = tmp_path / "nowhere" / "jobs.db"
    assert_clean_failure(cli("--store", f"sqlite://{missing}", "ls"), "no such file")
    assert not missing.parent.exists()  # reading never creates a store
    assert_clean_failure(cli("ls", cwd=tmp_path), "no such file 'schedlog.db'")


@pytest.mark.process
def test_read_commands_never_create_a_postgresql_store(pg_server: str) -> None:
    schema = f"{pg_server}_{uuid.uuid4().hex[:10]}"  # dropped at the end if it were made
    result = cli("--store", pg_url(schema), "ls")
    assert result.returncode == 1
    assert f"no schedlog store in schema '{schema}' (nothing created)" in result.stderr
    with psycopg.connect(PG_DSN) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        assert found.fetchone() is None


@pytest.mark.process
def test_read_commands_never_write_to_a_sqlite_file_that_is_no_store(tmp_path: Path) -> None:
    """Another app's database got schedlog's tables (and WAL mode); a non-database, a traceback."""
    other = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE users (id)")
        conn.commit()
    empty = tmp_path / "empty.db"
    empty.touch()
    garbage = tmp_path / "garbage.db"
    garbage.write_text("garbage\n")
    before = {p: p.read_bytes() for p in (other, empty, garbage)}
    for path in (other, empty):
        for command in (["ls"], ["stats"], ["cancel-all", "--yes"]):
            result = cli("--store", f"sqlite://{path}", *command)
            assert_clean_failure(result, "holds no schedlog store (nothing created)")
    assert_clean_failure(cli("--store", f"sqlite://{garbage}", "ls"), "file is not a database")
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.process
def test_a_sqlite_store_never_imports_the_postgresql_driver(
    store: tuple[str, dict[str, str]],
) -> None:
    """psycopg takes ~0.1 s to import: the CLI's commands and a worker on SQLite skip it."""
    url, ids = store

    def python(*args: str) -> subprocess.CompletedProcess[str]:
        run = [sys.executable, *args]
        env = clean_env()
        done = subprocess.run(run, check=False, capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        return done

    shown = python("-X", "importtime", "-m", "schedlog", "--store", url, "show", ids["ok"])
    imported = {line.rsplit("|", 1)[-1].strip() for line in shown.stderr.splitlines()}
    assert "schedlog.store" in imported  # the report lists what was imported
    assert not {m for m in imported if m.startswith("psycopg")}
    worker = (
        "import sys\n"
        "from schedlog import App\n"
        f"app = App(store={url!r})\n"
        "app.action(name='cli:later')(lambda ctx: None)\n"
        "app.start(); app.scheduler.run_after(60_000, 'cli:later'); app.stop(); app.close()\n"
        "print(sorted(m for m in sys.modules if m.startswith('psycopg')))\n"
    )
    assert python("-c", worker).stdout.strip() == "[]"
