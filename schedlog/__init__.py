"""schedlog: a durable function scheduler with Convex's `ctx.scheduler` semantics."""

from __future__ import annotations

from schedlog.app import App
from schedlog.clock import Clock, SystemClock
from schedlog.context import ActionCtx, MutationCtx
from schedlog.errors import (
    ArgsMismatchError,
    ArgsNotSerializableError,
    ArgsTooLargeError,
    ConfigurationError,
    ConflictError,
    IdleTimeoutError,
    InvalidQueryError,
    InvalidTransitionError,
    JobNotFoundError,
    RuntimeClosedError,
    SchedlogError,
    ScheduleValidationError,
    SchedulingError,
    StoreError,
    TooManyScheduledError,
    UnknownFunctionError,
)
from schedlog.projections.queries import Page
from schedlog.scheduler import Scheduler

__all__ = [
    "ActionCtx",
    "App",
    "ArgsMismatchError",
    "ArgsNotSerializableError",
    "ArgsTooLargeError",
    "Clock",
    "ConfigurationError",
    "ConflictError",
    "IdleTimeoutError",
    "InvalidQueryError",
    "InvalidTransitionError",
    "JobNotFoundError",
    "MutationCtx",
    "Page",
    "RuntimeClosedError",
    "SchedlogError",
    "ScheduleValidationError",
    "Scheduler",
    "SchedulingError",
    "StoreError",
    "SystemClock",
    "TooManyScheduledError",
    "UnknownFunctionError",
]
