"""Properties: random command sequences keep the transition table, and the fold matches (S1, S25).

Each example drives one aggregate through random commands (refused ones are skipped) and
checks after every step that folding its events with `change_for` + `apply_to_rows` gives a row
whose state, completed time and attempt match the aggregate's, that replay rebuilds it, and that
a terminal state never changes (the one documented exception: a canceled job that had started
may still record its completion, which changes nothing, S21).
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schedlog.events import (
    FunctionKind,
    InvalidTransitionError,
    JobState,
    Outcome,
    ScheduledFunction,
)
from schedlog.events.values import TERMINAL_STATES
from schedlog.projections import writes
from schedlog.projections.rows import (
    Change,
    apply_to_rows,
    change_for,
    merge_changes,
    state_after,
    to_document,
)
from schedlog.projections.schema import COUNTS, TABLE, view_ddl
from schedlog.projections.sql import Cur, Dialect
from schedlog.projections.writes import apply_changes, move_counts

T0 = 1_800_000_000_000
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,  # unit tests write nothing to disk
    suppress_health_check=[HealthCheck.too_slow],
)

COMMANDS = ("start", "retry", "cancel", "success", "failed")


@dataclass(frozen=True)
class Step:
    command: str
    gap_ms: int


steps = st.lists(
    st.builds(Step, st.sampled_from(COMMANDS), st.integers(min_value=0, max_value=10_000)),
    max_size=15,
)
kinds = st.sampled_from(list(FunctionKind))


def _apply(job: ScheduledFunction, step: Step, now: int) -> None:
    match step.command:
        case "start":
            job.start("node-a", at_ms=now)
        case "retry":
            job.retry(at_ms=now, error=f"conflict at {now}", next_run_ms=now + 100)
        case "cancel":
            job.cancel(at_ms=now)
        case "success":
            job.complete(Outcome.SUCCESS, at_ms=now)
        case "failed":
            job.complete(Outcome.FAILED, at_ms=now, error=f"boom at {now}")


def _scripted(kind: FunctionKind, script: list[Step], args: list[Any] | None = None) -> list[Any]:
    """Return the events of a job put through `script` (refused commands append nothing)."""
    job = ScheduledFunction.schedule(
        name="m:f", kind=kind, args=args or [], kwargs={}, scheduled_time_ms=T0, creation_time_ms=T0
    )
    now = T0
    for step in script:
        now += step.gap_ms
        with contextlib.suppress(InvalidTransitionError):
            _apply(job, step, now)
    return list(job.collect_events())


def _changes(log: list[Any]) -> list[Change]:
    changes = [change_for(e, seq) for seq, e in enumerate(log, start=1)]
    assert None not in changes  # every event here is a job's
    return [c for c in changes if c is not None]


def _saves(changes: list[Change], cuts: list[int]) -> Iterator[list[Change]]:
    """Cut the changes into saves at `cuts`; merge within each save, as the recorder does."""
    bounds = sorted({0, len(changes), *(c for c in cuts if c < len(changes))})
    for lo, hi in itertools.pairwise(bounds):
        yield merge_changes(changes[lo:hi])


def _fold(events: list[Any]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for seq, e in enumerate(events, start=1):
        change = change_for(e, seq)
        assert change is not None
        apply_to_rows(rows, change)
    return rows


def _snapshot(job: ScheduledFunction) -> tuple[Any, ...]:
    return (job.state, job.completed_time_ms, job.attempt, job.version)


def _check_transition(
    job: ScheduledFunction, command: str, before: tuple[Any, ...], *, was_started: bool, now: int
) -> None:
    """The accepted command fits the transition table (S1, S15, S20, S21)."""
    state_before = before[0]
    if state_before in TERMINAL_STATES:
        # Only a started, canceled job may still record a completion; it changes nothing.
        assert state_before is JobState.CANCELED
        assert command in {"success", "failed"}
        assert was_started
        assert (job.state, job.completed_time_ms) == before[:2]
    elif command in {"start", "retry"}:
        assert state_before is JobState.PENDING
        assert job.state is (JobState.IN_PROGRESS if command == "start" else JobState.PENDING)
    elif command == "cancel":
        assert job.state is JobState.CANCELED
        assert job.completed_time_ms == now
    else:
        assert state_before is JobState.IN_PROGRESS
        assert job.state.value == command
        assert job.completed_time_ms == now


def _check_view(job: ScheduledFunction, log: list[Any], retries: int) -> None:
    """The view folded from the whole log so far matches the aggregate (S1, S2, S25)."""
    rows = _fold(log)
    assert list(rows) == [job.job_id]
    row = rows[job.job_id]
    assert row["state"] == job.state.value
    assert row["completed_time"] == job.completed_time_ms
    assert row["attempt"] == job.attempt == 1 + retries
    assert row["scheduled_time"] == T0 + 1_000  # S2
    assert row["run_at"] == job.next_run_ms
    assert row["version"] == job.version == len(log)
    doc = to_document(row)
    assert doc["state"]["kind"] == job.state.value
    assert ("completedTime" in doc) == job.is_terminal
    assert ("error" in doc["state"]) == (job.state is JobState.FAILED)
    if job.state is JobState.FAILED:
        assert doc["state"]["error"] == job.error


@SETTINGS
@given(kind=kinds, script=steps)
def test_s1_s25_folding_the_log_matches_the_aggregate(kind: FunctionKind, script: list[Step]):
    job = ScheduledFunction.schedule(
        name="m:f",
        kind=kind,
        args=[1, "a"],
        kwargs={},
        scheduled_time_ms=T0 + 1_000,
        creation_time_ms=T0,
    )
    log: list[Any] = list(job.collect_events())
    now = T0
    retries = 0
    was_started = False

    for step in script:
        now += step.gap_ms
        before = _snapshot(job)
        refused: InvalidTransitionError | None = None
        try:
            _apply(job, step, now)
        except InvalidTransitionError as e:
            refused = e
        if refused is not None:
            # A refused command appends nothing, changes nothing, and names the state.
            assert job.collect_events() == []
            assert _snapshot(job) == before
            assert refused.state == before[0].value
            continue
        (new_event,) = job.collect_events()  # exactly one event per accepted command
        log.append(new_event)
        retries += step.command == "retry"
        _check_transition(job, step.command, before, was_started=was_started, now=now)
        was_started = was_started or step.command == "start"
        _check_view(job, log, retries)

    # Replay of the whole log rebuilds the same aggregate.
    rebuilt = None
    for e in log:
        rebuilt = e.mutate(rebuilt)
    assert rebuilt == job


@SETTINGS
@given(kind=kinds, script=steps)
def test_s1_once_terminal_the_view_never_changes_its_outcome(
    kind: FunctionKind, script: list[Step]
) -> None:
    job = ScheduledFunction.schedule(
        name="m:f",
        kind=kind,
        args=[],
        kwargs={},
        scheduled_time_ms=T0,
        creation_time_ms=T0,
    )
    now = T0
    first_terminal: tuple[str, int | None] | None = None
    for step in script:
        now += step.gap_ms + 1
        with contextlib.suppress(InvalidTransitionError):
            _apply(job, step, now)
        if job.is_terminal and first_terminal is None:
            first_terminal = (job.state.value, job.completed_time_ms)
    rows = _fold(list(job.collect_events()))
    row = rows[job.job_id]
    if first_terminal is None:
        assert row["state"] in {"pending", "inProgress"}
        assert row["completed_time"] is None
    else:
        assert (row["state"], row["completed_time"]) == first_terminal


@SETTINGS
@given(kind=kinds, script=steps, cuts=st.lists(st.integers(min_value=1, max_value=16)))
def test_merged_changes_fold_to_the_same_row(
    kind: FunctionKind, script: list[Step], cuts: list[int]
) -> None:
    """Merging a save's changes of one job (one statement) leaves the row as applying each."""
    changes = _changes(_scripted(kind, script))
    expected: dict[str, dict[str, Any]] = {}
    for change in changes:
        apply_to_rows(expected, change)
    merged_rows: dict[str, dict[str, Any]] = {}
    statements = 0
    for save in _saves(changes, cuts):
        for change in save:
            apply_to_rows(merged_rows, change)
            statements += 1
    assert merged_rows == expected
    assert statements <= len(changes)


@SETTINGS
@given(kind=kinds, script=steps, cuts=st.lists(st.integers(min_value=1, max_value=16)))
def test_state_after_tells_the_counts_what_each_change_does(
    kind: FunctionKind, script: list[Step], cuts: list[int]
) -> None:
    """The writer moves the counts by `state_after`: it must agree with the row, change by change."""
    changes = _changes(_scripted(kind, script))
    rows: dict[str, dict[str, Any]] = {}
    predicted: str | None = None
    for save in _saves(changes, cuts):
        for change in save:
            predicted = state_after(predicted, change)
            apply_to_rows(rows, change)
            assert predicted == rows[change.job_id]["state"]
    last = changes[-1]
    if not last.insert:
        assert state_after(None, last) is None  # no row to update: no count moves


@SETTINGS
@given(
    scripts=st.lists(st.tuples(kinds, steps), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=1, max_value=40)),
)
def test_the_writer_keeps_counts_equal_to_the_rows(
    scripts: list[tuple[FunctionKind, list[Step]]], cuts: list[int]
) -> None:
    """Several jobs' events, interleaved and cut into saves, written by `apply_changes` to a
    real SQLite view: the counts by state equal the rows' states after every save (S27)."""
    log: list[Any] = []
    for n, (kind, script) in enumerate(scripts):
        events = _scripted(kind, script, args=[n])
        log = [*log[: len(log) // 2], *events[:1], *log[len(log) // 2 :], *events[1:]]
    changes = _changes(log)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.row_factory = sqlite3.Row
    for statement in view_ddl(Dialect.SQLITE):
        conn.execute(statement)
    cur = Cur(conn.cursor(), Dialect.SQLITE)
    for save in _saves(changes, cuts):
        counts: dict[str, int] = {}
        apply_changes(cur, save, counts)
        move_counts(cur, counts)
        by_rows = dict(
            conn.execute(f"SELECT state, COUNT(*) FROM {TABLE} GROUP BY state").fetchall()
        )
        counts = dict(conn.execute(f"SELECT state, n FROM {COUNTS} WHERE n != 0").fetchall())
        assert counts == by_rows


def _view_db() -> tuple[sqlite3.Connection, Cur]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.row_factory = sqlite3.Row
    for statement in view_ddl(Dialect.SQLITE):
        conn.execute(statement)
    return conn, Cur(conn.cursor(), Dialect.SQLITE)


def _write_saves(cur: Cur, saves: list[list[Any]]) -> list[Any]:
    """Write each save's events (their changes merged) with `apply_changes`; return the log."""
    log: list[Any] = []
    for events in saves:
        counts: dict[str, int] = {}
        changes = [change_for(e, seq) for seq, e in enumerate(events, start=len(log) + 1)]
        log.extend(events)
        apply_changes(cur, merge_changes([c for c in changes if c is not None]), counts)
        move_counts(cur, counts)
    return log


def _assert_view_is_the_fold(conn: sqlite3.Connection, log: list[Any]) -> None:
    rows = {r["id"]: dict(r) for r in conn.execute(f"SELECT * FROM {TABLE}")}
    assert rows == _fold(log)
    by_rows = dict(conn.execute(f"SELECT state, COUNT(*) FROM {TABLE} GROUP BY state").fetchall())
    assert dict(conn.execute(f"SELECT state, n FROM {COUNTS} WHERE n != 0").fetchall()) == by_rows


def _jobs(n: int, kind: FunctionKind = FunctionKind.ACTION) -> list[ScheduledFunction]:
    return [
        ScheduledFunction.schedule(
            name="m:f", kind=kind, args=[i], kwargs={}, scheduled_time_ms=T0, creation_time_ms=T0
        )
        for i in range(n)
    ]


def test_s21_s27_a_claim_and_its_outcomes_are_written_as_groups_a_miss_one_by_one(
    monkeypatch: Any,
) -> None:
    """Six claims saved together are one UPDATE run for all (`_apply_bulk`); their outcomes
    too, unless a cancel landed on some (S21: their guard misses): then that group is rolled
    back and written change by change. Either way the rows and counts are the log's fold."""
    bulk: list[bool] = []
    real = writes._apply_bulk

    def watched(c: Cur, group: Any) -> bool:
        bulk.append(real(c, group))
        return bulk[-1]

    monkeypatch.setattr(writes, "_apply_bulk", watched)
    conn, cur = _view_db()
    jobs = _jobs(6)
    saves: list[list[Any]] = [[e for job in jobs for e in job.collect_events()]]
    for job in jobs:
        job.start("node-a", at_ms=T0 + 1)
    saves.append([e for job in jobs for e in job.collect_events()])
    for job in jobs[1:5:2]:
        job.cancel(at_ms=T0 + 2)  # a cancel in progress: they still complete (S21)
    saves.append([e for job in jobs for e in job.collect_events()])
    for job in jobs:
        job.complete(Outcome.SUCCESS, at_ms=T0 + 3)
    saves.append([e for job in jobs for e in job.collect_events()])
    log = _write_saves(cur, saves)
    assert bulk == [True, False]  # the claims in one run; the outcomes missed twice
    _assert_view_is_the_fold(conn, log)
    states = [r[0] for r in conn.execute(f"SELECT state FROM {TABLE} ORDER BY seq")]
    assert states == ["success", "canceled", "success", "canceled", "success", "success"]


@SETTINGS
@given(
    script=st.lists(st.sampled_from(COMMANDS), max_size=6),
    jobs=st.integers(min_value=4, max_value=10),
    picks=st.lists(st.tuples(st.integers(min_value=0, max_value=9), st.sampled_from(COMMANDS))),
)
def test_s27_jobs_moved_together_keep_the_view_equal_to_the_fold(
    script: list[str], jobs: int, picks: list[tuple[int, str]]
) -> None:
    """Many jobs put through the same commands in step (each step one save: same-shaped
    changes, written as a group), with odd commands to single jobs in between: the view's
    rows and counts stay the log's fold after all of it (S27)."""
    conn, cur = _view_db()
    many = _jobs(jobs)
    saves: list[list[Any]] = [[e for job in many for e in job.collect_events()]]
    now = T0
    for n, command in enumerate(script):
        now += 10
        for job in many:
            with contextlib.suppress(InvalidTransitionError):
                _apply(job, Step(command, 0), now)
        if n < len(picks):  # another command to one job, in the same save
            index, odd = picks[n]
            with contextlib.suppress(InvalidTransitionError):
                _apply(many[index % jobs], Step(odd, 0), now + 1)
        saves.append([e for job in many for e in job.collect_events()])
    _assert_view_is_the_fold(conn, _write_saves(cur, saves))


def test_a_mutation_commit_is_one_update() -> None:
    """Started then Completed of one job, saved together, become one update with no guard."""
    job = ScheduledFunction.schedule(
        name="m:f",
        kind=FunctionKind.MUTATION,
        args=[],
        kwargs={},
        scheduled_time_ms=T0,
        creation_time_ms=T0,
    )
    list(job.collect_events())
    job.start("node-a", at_ms=T0 + 1)
    job.complete(Outcome.SUCCESS, at_ms=T0 + 2)
    changes = [change_for(e, seq) for seq, e in enumerate(job.collect_events(), start=2)]
    merged = merge_changes([c for c in changes if c is not None])
    assert len(merged) == 1
    assert merged[0].guarded == {}
    assert merged[0].values["state"] == "success"
    assert merged[0].values["completed_time"] == T0 + 2
