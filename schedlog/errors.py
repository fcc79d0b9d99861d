"""The error hierarchy: the domain's errors plus the front door's own (front door)."""

from __future__ import annotations

from schedlog.events.errors import (
    ArgsMismatchError,
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

__all__ = [
    "ArgsMismatchError",
    "ArgsNotSerializableError",
    "ArgsTooLargeError",
    "ConfigurationError",
    "ConflictError",
    "IdleTimeoutError",
    "InvalidQueryError",
    "InvalidTransitionError",
    "JobNotFoundError",
    "RuntimeClosedError",
    "SchedlogError",
    "ScheduleValidationError",
    "SchedulingError",
    "StoreError",
    "TooManyScheduledError",
    "UnknownFunctionError",
]

SchedulingError = ScheduleValidationError
"""semantics.md's name for scheduling errors (a `ValueError`; `TypeError` too for bad args)."""


class ConfigurationError(SchedlogError, ValueError):
    """The App's configuration is invalid (store URL, concurrency, registration)."""


class RuntimeClosedError(SchedlogError, RuntimeError):
    """The runtime is not started, is closed, or one of its actors died.

    Also: it cannot do this from where it is asked (`stop` inside a scheduled function, a
    mutation's ctx kept past its return).
    """


class IdleTimeoutError(SchedlogError, TimeoutError):
    """`wait_until_idle` did not see the runtime idle within its timeout."""
