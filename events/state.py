"""The table of allowed transitions of a scheduled function; one function decides each (domain)."""

from __future__ import annotations

import enum

from schedlog.events.errors import InvalidTransitionError
from schedlog.events.values import JobState, Outcome

__all__ = ["Command", "next_state"]


class Command(enum.StrEnum):
    """What can be asked of a job."""

    START = "start"
    RETRY = "retry"
    COMPLETE = "complete"
    CANCEL = "cancel"


_P, _I, _C = JobState.PENDING, JobState.IN_PROGRESS, JobState.CANCELED

# (state, command) -> state after it; an outcome-dependent completion is resolved below.
_TABLE: dict[tuple[JobState, Command], JobState | None] = {
    (_P, Command.START): _I,
    (_P, Command.RETRY): _P,  # S15: a mutation's retry keeps it pending
    (_P, Command.CANCEL): _C,  # S20
    (_I, Command.CANCEL): _C,  # S21: the action keeps running
    (_I, Command.COMPLETE): None,  # success or failed, from the outcome
    (_C, Command.COMPLETE): _C,  # S21: an action canceled while running; recorded, changes nothing
}


def next_state(
    job_id: object,
    state: JobState,
    command: Command,
    *,
    outcome: Outcome | None = None,
    started: bool = False,
) -> JobState:
    """Return the state after `command`, or raise `InvalidTransitionError` naming the job.

    Args:
        job_id: the job (its id, or the UUID it is the text of), for the error message.
        state: the job's current state.
        command: what is asked.
        outcome: for `COMPLETE`, the outcome being recorded.
        started: whether the job was ever started (a canceled job may only be completed if so).

    """
    key = (state, command)
    if key not in _TABLE or (state is _C and not started):
        raise InvalidTransitionError(str(job_id), state.value, command.value)
    after = _TABLE[key]
    if after is None:
        if outcome is None:
            msg = "complete needs an outcome"
            raise ValueError(msg)
        return JobState.SUCCESS if outcome is Outcome.SUCCESS else JobState.FAILED
    return after
