"""The public API: `schedlog.__all__` pinned, and the error hierarchy callers catch (Errors)."""

from __future__ import annotations

import inspect

import pytest

import schedlog
import schedlog.events
from schedlog import (
    ArgsMismatchError,
    ArgsNotSerializableError,
    ArgsTooLargeError,
    ConfigurationError,
    ConflictError,
    IdleTimeoutError,
    InvalidQueryError,
    JobNotFoundError,
    RuntimeClosedError,
    SchedlogError,
    ScheduleValidationError,
    SchedulingError,
    StoreError,
    TooManyScheduledError,
    UnknownFunctionError,
)

PUBLIC = [
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

ERRORS = [name for name in PUBLIC if name.endswith("Error")]


def test_all_is_pinned() -> None:
    assert schedlog.__all__ == PUBLIC


def test_all_is_sorted_and_unique() -> None:
    assert schedlog.__all__ == sorted(schedlog.__all__)
    assert len(set(schedlog.__all__)) == len(schedlog.__all__)


def test_every_name_in_all_exists() -> None:
    for name in schedlog.__all__:
        assert getattr(schedlog, name) is not None, name


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from schedlog import *", namespace)  # noqa: S102 - the point of the test
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC


@pytest.mark.parametrize("name", ERRORS)
def test_every_exported_error_subclasses_schedlog_error(name: str) -> None:
    cls = getattr(schedlog, name)
    assert inspect.isclass(cls)
    assert issubclass(cls, SchedlogError)
    assert issubclass(cls, Exception)


def test_the_root_is_a_plain_exception() -> None:
    assert SchedlogError.__bases__ == (Exception,)


def test_scheduling_error_is_schedule_validation_error() -> None:
    assert SchedulingError is ScheduleValidationError
    assert issubclass(SchedulingError, ValueError)
    assert issubclass(SchedulingError, SchedlogError)


@pytest.mark.parametrize(
    "cls", [ArgsMismatchError, ArgsNotSerializableError, ArgsTooLargeError, TooManyScheduledError]
)
def test_argument_errors_are_scheduling_errors(cls: type[Exception]) -> None:
    assert issubclass(cls, SchedulingError)
    assert issubclass(cls, ValueError)


def test_args_not_serializable_or_mismatched_are_also_type_errors() -> None:
    assert issubclass(ArgsNotSerializableError, TypeError)
    assert issubclass(ArgsMismatchError, TypeError)


@pytest.mark.parametrize("cls", [UnknownFunctionError, JobNotFoundError])
def test_lookup_errors(cls: type[Exception]) -> None:
    assert issubclass(cls, LookupError)
    assert issubclass(cls, SchedlogError)


def test_unknown_function_error_names_the_function() -> None:
    err = UnknownFunctionError("billing.jobs:charge")
    assert "'billing.jobs:charge'" in str(err)
    assert err.name == "billing.jobs:charge"


def test_job_not_found_error_names_the_id() -> None:
    err = JobNotFoundError("abc")
    assert "'abc'" in str(err)
    assert err.job_id == "abc"


def test_scheduling_error_keeps_field_and_value() -> None:
    err = SchedulingError("delay_ms must be >= 0, got -1", field="delay_ms", value=-1)
    assert (err.field, err.value, str(err)) == ("delay_ms", -1, "delay_ms must be >= 0, got -1")


def test_the_other_error_bases() -> None:
    assert issubclass(ConflictError, StoreError)
    assert issubclass(InvalidQueryError, ValueError)
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(RuntimeClosedError, RuntimeError)
    assert issubclass(IdleTimeoutError, TimeoutError)


def test_the_domain_and_the_front_door_share_one_hierarchy() -> None:
    for name in schedlog.events.__all__:
        if name.endswith("Error"):
            assert getattr(schedlog, name) is getattr(schedlog.events, name), name
