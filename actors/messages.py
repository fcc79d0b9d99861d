"""Frozen slotted dataclasses the actors exchange (runtime)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import Future

    import pykka

    from schedlog.projections.queries import DueJob

__all__ = [
    "BackingOff",
    "JobFinished",
    "JobsScheduled",
    "LogAdvanced",
    "RunJob",
    "Settle",
    "StopDispatching",
    "Wake",
]


@dataclass(frozen=True, slots=True)
class JobsScheduled:
    """Jobs were saved as pending: the timer should start them at their due time."""

    jobs: tuple[DueJob, ...]


@dataclass(frozen=True, slots=True)
class Wake:
    """The clock reached a deadline the timer asked for."""


@dataclass(frozen=True, slots=True)
class LogAdvanced:
    """The store's log grew (perhaps written by another process); `position` is its last id."""

    position: int


@dataclass(frozen=True, slots=True)
class RunJob:
    """An executor should run this job now."""

    job_id: str


@dataclass(frozen=True, slots=True)
class JobFinished:
    """An executor is done with a job; `retry` is set if the job must run again later."""

    job_id: str
    executor: pykka.ActorRef[Any]
    retry: DueJob | None = None


@dataclass(frozen=True, slots=True)
class BackingOff:
    """An executor waits until `until_ms` before trying to save a job's outcome again.

    Until then the job does not count as running for `Settle`: a test on a fake clock must
    move time past `until_ms` for the executor to go on.
    """

    job_id: str
    until_ms: int


@dataclass(frozen=True, slots=True)
class Settle:
    """Resolve `reply` once nothing due is waiting and nothing is running."""

    reply: Future[None]


@dataclass(frozen=True, slots=True)
class StopDispatching:
    """Start no more jobs (graceful stop); asked, so the reply proves it took effect."""
