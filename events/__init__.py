"""schedlog.events: the pure domain (aggregate, events, state machine, validation, errors)."""

from __future__ import annotations

from schedlog.events.errors import (
    ArgsNotSerializableError,
    ArgsTooLargeError,
    ConflictError,
    InvalidQueryError,
    InvalidTransitionError,
    JobNotFoundError,
    SchedlogError,
    ScheduleValidationError,
    StoreError,
    TooManyScheduledError,
    UnknownFunctionError,
)
from schedlog.events.function import JobId, ScheduledFunction
from schedlog.events.values import FunctionKind, JobState, Outcome

__all__ = [
    "ArgsNotSerializableError",
    "ArgsTooLargeError",
    "ConflictError",
    "FunctionKind",
    "InvalidQueryError",
    "InvalidTransitionError",
    "JobId",
    "JobNotFoundError",
    "JobState",
    "Outcome",
    "SchedlogError",
    "ScheduleValidationError",
    "ScheduledFunction",
    "StoreError",
    "TooManyScheduledError",
    "UnknownFunctionError",
]
