"""Claims whose commit answer was lost: this node's if they landed, run once (runtime, S17, S19).

A claim's save can raise although its commit landed (a connection dropped at COMMIT). The job is
then `inProgress` on this node, which nobody else will run or recover while the node lives, so
this node must recognise the claim as its own and run it: on the runner's later try, in a
batch, or from a recovery pass (the timer may have dropped the retry in the same outage).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from schedlog.events import JobState, ScheduledFunction

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["UnsureClaims", "is_claim"]

log = logging.getLogger(__name__)

Claim = tuple[int, int | None]
"""What a claim made: the job's version and its start time."""


def is_claim(job: ScheduledFunction, node_id: str, version: int, started: int | None) -> bool:
    """Tell whether `job` (freshly read) is still just as `node_id` claimed it, not run."""
    return (
        job.state is JobState.IN_PROGRESS
        and job.version == version
        and job.node_id == node_id
        and job.started_at_ms == started
    )


class UnsureClaims:
    """The claims of this node whose save raised a store error, by job id.

    Shared by the executors (which note and take them) and the recovery pass (which looks
    which landed); one lock keeps a pass from dropping a newer claim made while it read.
    """

    def __init__(self, node_id: Callable[[], str]) -> None:
        self._node_id = node_id
        self.entries: dict[str, Claim] = {}
        self._lock = threading.Lock()

    def note(self, job: ScheduledFunction) -> None:
        """Remember `job`'s claim (its save raised): it may have landed."""
        with self._lock:
            self.entries[job.job_id] = (job.version, job.started_at_ms)

    def holds(self, job_id: str) -> bool:
        """Tell whether `job_id`'s last claim got no answer (it may have landed)."""
        return job_id in self.entries

    def take(self, job: ScheduledFunction) -> bool:
        """Tell whether `job` (freshly read) is this node's landed claim, not run.

        True at most once per claim (it is then the caller's to run).
        """
        if not self.entries:  # nearly always: no lock taken for a backlog's every job
            return False
        with self._lock:
            claim = self.entries.pop(job.job_id, None)
        return claim is not None and is_claim(job, self._node_id(), *claim)

    def landed(self, load_job: Callable[[str], ScheduledFunction | None]) -> list[str]:
        """Return the jobs whose claim landed (this node's, not run), one read each.

        Those found otherwise (the claim did not land: still pending, for the timer's due index
        to find; or ended) are forgotten. A store still out: the next pass looks again.
        """
        landed: list[str] = []
        with self._lock:
            entries = list(self.entries.items())
        for job_id, claim in entries:
            try:
                job = load_job(job_id)
            except Exception:  # the store is still out
                log.debug("job %s: cannot read it to settle its claim", job_id, exc_info=True)
                return landed
            if job is not None and is_claim(job, self._node_id(), *claim):
                landed.append(job_id)
            elif job is None or job.state is not JobState.PENDING or job.version != claim[0] - 1:
                with self._lock:
                    if self.entries.get(job_id) == claim:  # not a newer claim's, made since
                        del self.entries[job_id]
        return landed
