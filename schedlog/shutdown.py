"""How a runtime stops: its executors together, within one timeout, then its own actors."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import pykka

if TYPE_CHECKING:
    from schedlog.actors.commits import CommitPool

__all__ = ["ACTOR_STOP_S", "COMMIT_GRACE_S", "IDLE_STOP_S", "stop_actor", "stop_executors"]

log = logging.getLogger(__name__)

COMMIT_GRACE_S = 1.0
"""The least time a stop gives the final commits of functions that ended within its timeout."""
IDLE_STOP_S = 0.1
"""The least time a stop gives the executors (an idle one stops in well under a millisecond):
`timeout_s=0` (`--grace 0`) still stops idle executors cleanly."""
ACTOR_STOP_S = 5.0
"""How long a stop waits for the runtime's own actors (the timer, recovery): they answer in
milliseconds; the user's functions get the stop's `timeout_s`."""


def stop_actor(actor: pykka.ActorRef[Any]) -> None:
    """Stop one of the runtime's own actors, waiting `ACTOR_STOP_S` at most."""
    try:
        actor.stop(block=True, timeout=ACTOR_STOP_S)
    except pykka.Timeout:
        log.warning("%s did not stop within %s s", actor.actor_class.__name__, ACTOR_STOP_S)
    except pykka.ActorDeadError:
        pass


def stop_executors(
    executors: list[pykka.ActorRef[Any]], commits: CommitPool, timeout_s: float
) -> bool:
    """Let running functions, then their final commits, end; False if some did not.

    The executors stop together (each stop queues behind the job it is running), within
    one `timeout_s` for all (at least `IDLE_STOP_S`); the commits then get what is left of
    it, and at least a second (those of functions that ended just in time take a few ms).
    """
    deadline = time.monotonic() + max(timeout_s, IDLE_STOP_S)
    stopping = [executor.stop(block=False) for executor in executors]
    late = 0
    for stopped in stopping:
        try:
            stopped.get(timeout=max(deadline - time.monotonic(), 0))
        except pykka.Timeout:
            late += 1
    if late:
        log.warning("%d executors did not finish their functions within %s s", late, timeout_s)
    left = max(deadline - time.monotonic(), min(timeout_s, COMMIT_GRACE_S))
    if not commits.stop(left):
        log.warning("jobs' final commits did not end within %.1f s", left)
        return False
    return not late
