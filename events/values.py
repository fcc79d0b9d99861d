"""Plain values of the domain: JSON aliases, function kinds, job states and time helpers."""

from __future__ import annotations

import enum

__all__ = [
    "MAX_ARGS_BYTES",
    "MAX_SCHEDULED_PER_MUTATION",
    "MAX_SKEW_MS",
    "TERMINAL_STATES",
    "FunctionKind",
    "JobState",
    "Outcome",
]

MAX_SKEW_MS = 5 * 366 * 24 * 60 * 60 * 1000
"""S6: a due time may be at most this far before or after the scheduling time."""

MAX_SCHEDULED_PER_MUTATION = 1000
"""S10: how many functions one mutation may schedule."""

MAX_ARGS_BYTES = 16 * 1024 * 1024
"""S10: the total encoded size of the arguments one mutation (or one call) may schedule."""


class FunctionKind(enum.StrEnum):
    """Mutations run exactly once; actions at most once."""

    MUTATION = "mutation"
    ACTION = "action"


class JobState(enum.StrEnum):
    """The `state.kind` of a `_scheduled_functions` document (S1)."""

    PENDING = "pending"
    IN_PROGRESS = "inProgress"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELED = "canceled"


class Outcome(enum.StrEnum):
    """What `Completed` records."""

    SUCCESS = "success"
    FAILED = "failed"


TERMINAL_STATES = frozenset({JobState.SUCCESS, JobState.FAILED, JobState.CANCELED})
