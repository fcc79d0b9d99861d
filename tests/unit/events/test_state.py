"""The transition table of a job (S1, S20, S21, S23), through `next_state` and the aggregate."""

from __future__ import annotations

import contextlib
import itertools

import pytest

from schedlog.events import (
    FunctionKind,
    InvalidTransitionError,
    JobState,
    Outcome,
    SchedlogError,
    ScheduledFunction,
)
from schedlog.events.state import Command, next_state

JOB = "job-1"
P, R, S, F, C = (  # R: running (inProgress)
    JobState.PENDING,
    JobState.IN_PROGRESS,
    JobState.SUCCESS,
    JobState.FAILED,
    JobState.CANCELED,
)
TERMINAL = (S, F, C)

# Every allowed (state, command, outcome, started) and the state after it.
ALLOWED = {
    (P, Command.START, None): R,
    (P, Command.RETRY, None): P,  # S15: a mutation's retry keeps it pending
    (P, Command.CANCEL, None): C,  # S20
    (R, Command.CANCEL, None): C,  # S21
    (R, Command.COMPLETE, Outcome.SUCCESS): S,
    (R, Command.COMPLETE, Outcome.FAILED): F,
}


def _all_cases() -> list[tuple[JobState, Command, Outcome | None]]:
    cases = []
    for state, command in itertools.product(JobState, Command):
        outcomes = list(Outcome) if command is Command.COMPLETE else [None]
        cases.extend((state, command, outcome) for outcome in outcomes)
    return cases


FORBIDDEN = [
    case
    for case in _all_cases()
    if case not in ALLOWED and not (case[0] is C and case[1] is Command.COMPLETE)
]


def _job(kind: FunctionKind = FunctionKind.ACTION) -> ScheduledFunction:
    return ScheduledFunction.schedule(
        name="billing.jobs:charge",
        kind=kind,
        args=["acc-1", 250],
        kwargs={},
        scheduled_time_ms=1_000,
        creation_time_ms=500,
    )


# next_state: the table itself


@pytest.mark.parametrize(("case", "after"), sorted(ALLOWED.items(), key=str))
def test_s1_allowed_transition(case: tuple[JobState, Command, Outcome | None], after: JobState):
    state, command, outcome = case
    assert next_state(JOB, state, command, outcome=outcome) is after


@pytest.mark.parametrize("case", FORBIDDEN, ids=str)
def test_s1_forbidden_transition_raises_naming_job_state_and_action(
    case: tuple[JobState, Command, Outcome | None],
) -> None:
    state, command, outcome = case
    for started in (False, True):
        with pytest.raises(InvalidTransitionError) as info:
            next_state(JOB, state, command, outcome=outcome, started=started)
        err = info.value
        assert (err.job_id, err.state, err.action) == (JOB, state.value, command.value)
        message = str(err)
        assert JOB in message
        assert state.value in message
        assert command.value in message
        assert message == f"cannot {command.value} job {JOB}: it is {state.value}"


@pytest.mark.parametrize("state", [S, F])
@pytest.mark.parametrize("command", list(Command))
def test_s1_success_and_failed_accept_no_command(state: JobState, command: Command) -> None:
    for outcome, started in itertools.product([None, *Outcome], [False, True]):
        with pytest.raises(InvalidTransitionError):
            next_state(JOB, state, command, outcome=outcome, started=started)


@pytest.mark.parametrize("command", [Command.START, Command.RETRY, Command.CANCEL])
def test_s23_canceled_accepts_no_command_but_a_completion(command: Command) -> None:
    for started in (False, True):
        with pytest.raises(InvalidTransitionError):
            next_state(JOB, C, command, started=started)


@pytest.mark.parametrize("outcome", list(Outcome))
def test_s21_completion_after_cancel_is_recorded_only_if_started(outcome: Outcome) -> None:
    assert next_state(JOB, C, Command.COMPLETE, outcome=outcome, started=True) is C
    with pytest.raises(InvalidTransitionError, match="cannot complete job job-1: it is canceled"):
        next_state(JOB, C, Command.COMPLETE, outcome=outcome, started=False)


def test_completion_needs_an_outcome() -> None:
    with pytest.raises(ValueError, match="outcome"):
        next_state(JOB, R, Command.COMPLETE)


def test_invalid_transition_error_is_a_schedlog_error() -> None:
    assert issubclass(InvalidTransitionError, SchedlogError)


# The same table, through the aggregate's commands


def test_s20_cancel_pending_job() -> None:
    job = _job()
    job.cancel(at_ms=2_000)
    assert job.state is C
    assert job.completed_time_ms == 2_000
    assert job.is_terminal


def test_s20_a_canceled_pending_job_can_never_start() -> None:
    job = _job()
    job.cancel(at_ms=2_000)
    with pytest.raises(InvalidTransitionError) as info:
        job.start("node-a", at_ms=3_000)
    assert job.job_id in str(info.value)
    assert "canceled" in str(info.value)
    assert "start" in str(info.value)
    assert job.state is C


def test_s21_cancel_in_progress_then_completion_keeps_canceled() -> None:
    job = _job()
    job.start("node-a", at_ms=1_000)
    job.cancel(at_ms=1_500)
    job.complete(Outcome.SUCCESS, at_ms=2_000)
    assert job.state is C
    assert job.completed_time_ms == 1_500  # the cancel's time, not the completion's
    assert job.outcome is Outcome.SUCCESS  # recorded for the audit
    assert job.error is None


def test_s21_failed_completion_after_cancel_keeps_canceled_and_no_error() -> None:
    job = _job()
    job.start("node-a", at_ms=1_000)
    job.cancel(at_ms=1_500)
    job.complete(Outcome.FAILED, at_ms=2_000, error="boom")
    assert job.state is C
    assert job.completed_time_ms == 1_500
    assert job.outcome is Outcome.FAILED


def test_s21_completion_after_cancel_of_a_never_started_job_is_refused() -> None:
    job = _job()
    job.cancel(at_ms=1_500)
    with pytest.raises(InvalidTransitionError, match="complete"):
        job.complete(Outcome.SUCCESS, at_ms=2_000)
    assert job.outcome is None


def test_s21_a_canceled_action_records_at_most_one_completion() -> None:
    job = _job()
    job.start("node-a", at_ms=1_000)
    job.cancel(at_ms=1_500)
    job.complete(Outcome.SUCCESS, at_ms=2_000)
    version = job.version
    with contextlib.suppress(InvalidTransitionError):
        job.complete(Outcome.FAILED, at_ms=3_000, error="late")
    assert job.version == version, "a second Completed was appended to a canceled job"
    assert job.outcome is Outcome.SUCCESS


@pytest.mark.parametrize("outcome", list(Outcome))
def test_s1_terminal_after_completion_refuses_every_command(outcome: Outcome) -> None:
    job = _job()
    job.start("node-a", at_ms=1_000)
    job.complete(outcome, at_ms=2_000, error="boom" if outcome is Outcome.FAILED else None)
    before = (job.state, job.completed_time_ms, job.version)
    for command in (
        lambda: job.start("node-b", at_ms=3_000),
        lambda: job.retry(at_ms=3_000, error="x", next_run_ms=4_000),
        lambda: job.cancel(at_ms=3_000),
        lambda: job.complete(Outcome.SUCCESS, at_ms=3_000),
        lambda: job.complete(Outcome.FAILED, at_ms=3_000, error="y"),
    ):
        with pytest.raises(InvalidTransitionError):
            command()
    assert (job.state, job.completed_time_ms, job.version) == before


def test_s23_cancel_of_a_finished_or_canceled_job_is_refused_by_the_domain() -> None:
    # The front door turns this into a no-op (S23); the aggregate never appends a second event.
    done = _job()
    done.start("node-a", at_ms=1_000)
    done.complete(Outcome.SUCCESS, at_ms=2_000)
    canceled = _job()
    canceled.cancel(at_ms=1_000)
    for job in (done, canceled):
        version = job.version
        with pytest.raises(InvalidTransitionError, match="cancel"):
            job.cancel(at_ms=5_000)
        assert job.version == version


def test_s15_retry_keeps_pending_and_counts_the_attempt() -> None:
    job = _job(FunctionKind.MUTATION)
    job.retry(at_ms=1_010, error="conflict", next_run_ms=1_100)
    assert job.state is P
    assert job.attempt == 2
    assert job.next_run_ms == 1_100
    assert job.scheduled_time_ms == 1_000  # S2: never rewritten


def test_retry_of_a_job_in_progress_is_refused() -> None:
    job = _job()
    job.start("node-a", at_ms=1_000)
    with pytest.raises(InvalidTransitionError, match=r"cannot retry job .*: it is inProgress"):
        job.retry(at_ms=1_010, error="x", next_run_ms=1_100)


def test_start_twice_is_refused() -> None:
    job = _job()
    job.start("node-a", at_ms=1_000)
    with pytest.raises(InvalidTransitionError, match=r"cannot start job .*: it is inProgress"):
        job.start("node-b", at_ms=1_001)
    assert job.node_id == "node-a"
