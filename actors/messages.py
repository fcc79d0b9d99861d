"""Frozen slotted dataclasses the actors exchange (runtime)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import threading
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
    "SlotFree",
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
    """The store's log grew (perhaps written by another process).

    `position` is its last id, or None when only a notification said so. The timer sets
    `handled` as it starts reading, so the watcher sends no second message meanwhile.
    """

    position: int | None
    handled: threading.Event | None = None


@dataclass(frozen=True, slots=True)
class RunJob:
    """An executor should run this job now."""

    job_id: str


@dataclass(frozen=True, slots=True)
class JobFinished:
    """A job's attempt is over; `retry` is set if the job must run again later.

    `executor` is the executor that ran it, now free, or None when the attempt ended in a
    commit thread (the executor said `SlotFree` when the function returned).
    """

    job_id: str
    executor: pykka.ActorRef[Any] | None
    retry: DueJob | None = None


@dataclass(frozen=True, slots=True)
class SlotFree:
    """An executor's function returned: it may run the next job while `job_id` commits.

    The job still counts as running (for `Settle`, and so it is not started twice) until its
    `JobFinished` arrives.
    """

    job_id: str
    executor: pykka.ActorRef[Any]


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
