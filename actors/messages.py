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
    "JobsFinished",
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
    """An executor should run these jobs now, one after another (more than one: a backlog).

    A lone job may come up to the timer's lead (`LEAD_MS`, up to `MAX_LEAD_MS` after slow
    claims) before it is due: the executor reads it (an action: claims it), then starts it at
    `not_before` (epoch ms; 0: at once).
    """

    job_ids: tuple[str, ...]
    not_before: int = 0


@dataclass(frozen=True, slots=True)
class JobsFinished:
    """Jobs' attempts are over; each `(job_id, retry)` has `retry` set if it must run again.

    `executor` is the executor that ran them, now free, or None when the attempts ended in a
    commit thread (the executor said `SlotFree` when their functions returned). `returned`
    jobs of its batch were not started: they go back in the queue as they were.
    """

    finished: tuple[tuple[str, DueJob | None], ...]
    executor: pykka.ActorRef[Any] | None
    returned: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SlotFree:
    """An executor's functions returned: it may run the next jobs while theirs commit.

    The jobs still count as running (for `Settle`, and so they are not started twice) until
    their `JobsFinished` arrives.
    """

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
