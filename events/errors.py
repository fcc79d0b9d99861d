"""The schedlog error hierarchy: one root so callers can catch everything (domain layer)."""

from __future__ import annotations

__all__ = [
    "ArgsMismatchError",
    "ArgsNotSerializableError",
    "ArgsTooLargeError",
    "ConflictError",
    "InvalidQueryError",
    "InvalidTransitionError",
    "JobNotFoundError",
    "SchedlogError",
    "ScheduleValidationError",
    "StoreError",
    "TooManyScheduledError",
    "UnknownFunctionError",
]


class SchedlogError(Exception):
    """Root of every error schedlog raises to its callers."""


class ScheduleValidationError(SchedlogError, ValueError):
    """A schedule request is invalid: bad delay, time, name or arguments."""

    def __init__(self, message: str, *, field: str, value: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class ArgsNotSerializableError(ScheduleValidationError, TypeError):
    """An argument cannot be encoded as JSON (S9)."""


class ArgsMismatchError(ScheduleValidationError, TypeError):
    """The arguments do not fit the registered function's parameters (S8, S9)."""


class ArgsTooLargeError(ScheduleValidationError):
    """The arguments exceed the size limit (S10)."""


class TooManyScheduledError(ScheduleValidationError):
    """A mutation tried to schedule more than the limit of functions (S10)."""


class UnknownFunctionError(SchedlogError, LookupError):
    """A function name is not registered (S8)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"unknown function {name!r}: register it with @app.mutation or @app.action"
        )
        self.name = name


class JobNotFoundError(SchedlogError, LookupError):
    """No scheduled function has this id (S23)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no scheduled function with id {job_id!r}")
        self.job_id = job_id


class InvalidTransitionError(SchedlogError):
    """A command does not fit the job's current state (for example, start a canceled job)."""

    def __init__(self, job_id: str, state: str, action: str) -> None:
        super().__init__(f"cannot {action} job {job_id}: it is {state}")
        self.job_id = job_id
        self.state = state
        self.action = action


class StoreError(SchedlogError):
    """The event store failed; the driver's error is chained."""


class ConflictError(StoreError):
    """A save lost a version conflict (another writer got there first)."""


class InvalidQueryError(SchedlogError, ValueError):
    """A query's filter, order, limit or cursor is not valid."""
