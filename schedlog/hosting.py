"""The App's host side: what the executors and recovery ask of it (`ExecutionHost`)."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

import pykka

from schedlog.actors.host import Invocation, describe_error
from schedlog.actors.messages import BackingOff, JobsScheduled
from schedlog.context import ActionCtx, MutationCtx
from schedlog.errors import RuntimeClosedError, UnknownFunctionError
from schedlog.events import FunctionKind
from schedlog.projections.queries import DueJob
from schedlog.registry import refuse_unrun

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from uuid import UUID

    from schedlog.actors.batch import BatchRunner
    from schedlog.clock import Clock
    from schedlog.events import ScheduledFunction
    from schedlog.projections.queries import ScheduledFunctions
    from schedlog.registry import Registry
    from schedlog.store import JobStore

__all__ = ["Hosting", "refuse_inside_a_function"]

log = logging.getLogger(__name__)

_RUNNING_JOB = threading.local()
"""The App and job whose function runs on this thread, if any (`refuse_inside_a_function`)."""


def refuse_inside_a_function(app: object, call: str) -> None:
    """Refuse a call that waits for `app`'s running functions, made by one of them."""
    running: tuple[object, str] | None = getattr(_RUNNING_JOB, "running", None)
    if running is not None and running[0] is app:
        job_id = running[1]
        raise RuntimeClosedError(
            f"{call} cannot be called from inside a scheduled function (job {job_id}): it "
            "would wait for that function itself; call it from application code"
        )


class Hosting:
    """What the executors and recovery ask of the App: jobs, their functions, the store's health."""

    store: JobStore
    registry: Registry
    clock: Clock
    node_id: str
    lease_ms: int
    _runner: BatchRunner
    _timer: pykka.ActorRef[Any] | None
    _recovery: pykka.ActorRef[Any] | None
    _executors: list[pykka.ActorRef[Any]]
    _closed: bool
    _store_failing_since: int | None
    scheduled_functions: ScheduledFunctions

    if TYPE_CHECKING:  # the App's own (the contexts take the App as their `Core`)

        def save(self, *objs: Any, reads: Mapping[UUID, int] | None = None) -> None:
            """`App.save`."""

    def load_job(self, job_id: str) -> ScheduledFunction | None:
        """Return the job's aggregate, freshly read."""
        return self.store.load_job(job_id)

    def load_jobs(self, job_ids: Sequence[str]) -> dict[str, ScheduledFunction]:
        """Return the jobs among `job_ids` that exist, freshly read in one query."""
        return self.store.load_jobs(job_ids)

    def version_of(self, job_id: str) -> int | None:
        """Return the version of the job's last event in the store."""
        return self.store.version_of(job_id)

    def kind_of(self, name: str) -> FunctionKind | None:
        """Return how `name` runs, if registered."""
        registered = self.registry.get(name)
        return None if registered is None else registered.kind

    def invoke(self, job: ScheduledFunction, now_ms: int) -> Invocation:
        """Run the job's function with a fresh context; its errors become the Invocation's."""
        registered = self.registry.get(job.name)
        if registered is None:
            return Invocation(describe_error(UnknownFunctionError(job.name)))
        ctx: MutationCtx | ActionCtx
        if registered.kind is FunctionKind.MUTATION:
            ctx = MutationCtx(self, job.job_id, now_ms, job.attempt, name=job.name)
        else:
            ctx = ActionCtx(self, job.job_id, now_ms, job.attempt)
        outer = getattr(_RUNNING_JOB, "running", None)
        _RUNNING_JOB.running = (self, job.job_id)
        try:
            result = registered.fn(ctx, *job.args, **job.kwargs)
            if result is not None:  # nearly always None: no call
                refuse_unrun(job.name, result)
        except BaseException as e:
            log.info("job %s raised %r", job.job_id, e, extra={"job_id": job.job_id})
            return Invocation(describe_error(e))
        finally:
            _RUNNING_JOB.running = outer
            if isinstance(ctx, MutationCtx):
                ctx.finish()
        if isinstance(ctx, MutationCtx):
            return Invocation(None, ctx.staged, ctx.reads)
        return Invocation(None)

    def heartbeat(self, now_ms: int) -> None:
        """Record this node as alive (renews the leases of the actions it runs, S19)."""
        self.store.heartbeat(self.node_id, now_ms, self.lease_ms)

    def expired_claims(self, now_ms: int) -> list[str]:
        """Return running actions whose lease ran out on a node not seen since (S19)."""
        return self.store.expired_claims(now_ms)

    def resubmit_unsure_claims(self, now_ms: int) -> int:
        """Hand the timer again this node's landed claims not run yet (see the runner's)."""
        jobs = self._runner.unsure.landed(self.load_job)
        if jobs and self._timer is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                self._timer.tell(JobsScheduled(tuple(DueJob(now_ms, 0, j) for j in jobs)))
        return len(jobs)

    def store_reachable(self, *, ok: bool, now_ms: int) -> None:
        """Track how long the store has been unreachable (see `store_outage_ms`)."""
        if ok:
            self._store_failing_since = None
        elif self._store_failing_since is None:
            self._store_failing_since = now_ms

    def store_outage_ms(self) -> int:
        """Return how long the store has been unreachable by this runtime (0 if it is fine)."""
        since = self._store_failing_since
        return 0 if since is None else max(self.clock.now_ms() - since, 0)

    def backing_off(self, job_id: str, until_ms: int) -> None:
        """Tell the timer an executor waits out a store outage (it is not busy until then)."""
        timer = self._timer
        if timer is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                timer.tell(BackingOff(job_id, until_ms))

    def check_accepting(self) -> None:
        """Raise RuntimeClosedError if the App is closed or a runtime actor died."""
        if self._closed:
            raise RuntimeClosedError("the App is closed")
        timer = self._timer
        actors = [timer, self._recovery, *self._executors]
        if timer is not None and not all(a is None or a.is_alive() for a in actors):
            raise RuntimeClosedError("the runtime died; see the log for the actor's error")
