"""RecoveryActor: node heartbeats, recovery of cut-off actions (S19), retention (S28).

Every third of a lease it records a heartbeat for its node (renewing the leases of every action
the node runs), then looks for running actions whose lease ran out on a node that has not been
seen since. Such an action was cut off by a crash: it gets `Completed(failed, "Transient error
while executing action")` and never runs again. A live node's jobs are never touched, so several
workers can share one store. Mutations need nothing: one cut off before its commit left nothing
in the log, is still pending, and the timer runs it again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from schedlog.actors.base import RuntimeActor, wake_me_at
from schedlog.actors.messages import Wake
from schedlog.events import ConflictError, JobState, Outcome

if TYPE_CHECKING:
    from schedlog.actors.ports import Clock, Wakeup
    from schedlog.events import ScheduledFunction

__all__ = ["CUT_OFF_ERROR", "RecoverNow", "RecoveryActor", "RecoveryHost"]

log = logging.getLogger(__name__)

CUT_OFF_ERROR = "Transient error while executing action"


class RecoverNow:
    """Ask for a heartbeat and a recovery pass at once (asked; the reply is how many failed)."""


class RecoveryHost(Protocol):
    """What recovery needs of the App."""

    clock: Clock
    node_id: str
    lease_ms: int

    def heartbeat(self, now_ms: int) -> None:
        """Record this node as alive at `now_ms`."""

    def expired_claims(self, now_ms: int) -> list[str]:
        """Return running jobs whose lease ran out on a node not seen since."""

    def load_job(self, job_id: str) -> ScheduledFunction | None:
        """Return the job's aggregate, freshly read."""

    def save(self, *objs: Any) -> None:
        """Save aggregates atomically."""

    def store_reachable(self, *, ok: bool, now_ms: int) -> None:
        """Report whether the last heartbeat reached the store (for the App's health)."""

    def apply_retention(self, now_ms: int) -> int:
        """Remove finished jobs past their retention from the view (S28); return how many."""

    def resubmit_unsure_claims(self, now_ms: int) -> int:
        """Hand the timer again this node's landed claims not run yet; return how many.

        Claims whose commit answer was lost: the retry the runner asked for may have been
        dropped (say, the timer could not read its due index during the same outage).
        """


class RecoveryActor(RuntimeActor):
    """Heartbeats for its node and recovers cut-off actions, on the injected clock."""

    def __init__(self, host: RecoveryHost) -> None:
        super().__init__()
        self._host = host
        self._wakeup: Wakeup | None = None

    def on_start(self) -> None:
        """Heartbeat and recover at start-up, before the first job runs."""
        self._pass()

    def on_receive(self, message: Any) -> Any:
        """Handle `Wake` (periodic) and `RecoverNow` (asked by `wait_until_idle`)."""
        match message:
            case Wake():
                return self._pass()
            case RecoverNow():
                return self._pass()
            case _:
                log.warning("recovery: unexpected message %r", message)
        return None

    def on_stop(self) -> None:
        """Cancel the next wake-up."""
        if self._wakeup is not None:
            self._wakeup.cancel()

    def _pass(self) -> int:
        host = self._host
        now = host.clock.now_ms()
        failed = 0
        try:
            host.heartbeat(now)  # first: this node's own leases are never the ones run out
        except Exception:
            log.warning("recovery: cannot reach the store; trying again later", exc_info=True)
            host.store_reachable(ok=False, now_ms=now)
        else:
            host.store_reachable(ok=True, now_ms=now)
            try:
                for job_id in host.expired_claims(now):
                    failed += self._fail_cut_off(job_id)
                host.resubmit_unsure_claims(now)
                host.apply_retention(now)
            except Exception:
                log.warning("recovery: the store failed; trying again later", exc_info=True)
        self._arm(now + max(host.lease_ms // 3, 1))
        return failed

    def _fail_cut_off(self, job_id: str) -> int:
        while True:
            job = self._host.load_job(job_id)
            if job is None or job.state is not JobState.IN_PROGRESS:
                return 0  # it finished, or was canceled, meanwhile
            if job.node_id == self._host.node_id:
                return 0  # ours, and we are alive
            job.complete(Outcome.FAILED, self._host.clock.now_ms(), CUT_OFF_ERROR)
            try:
                self._host.save(job)
            except ConflictError:
                continue
            log.warning("job %s: cut off on node %s; failed", job_id, job.node_id)
            return 1

    def _arm(self, deadline: int) -> None:
        if self._wakeup is not None:
            self._wakeup.cancel()
        self._wakeup = wake_me_at(self._host.clock, deadline, self.actor_ref)
