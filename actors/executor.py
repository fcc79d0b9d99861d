"""Mutation and action executors: claim, run, commit, retry with backoff (runtime).

`JobRunner` holds the claim/commit path; `ExecutorActor` is one slot that runs one job at a time
on its own thread, so `max_concurrency` executors bound how many functions run at once (S13).
"""

from __future__ import annotations

import logging
import random
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pykka

from schedlog.actors.messages import JobFinished, RunJob
from schedlog.events import ConflictError, FunctionKind, JobState, Outcome, ScheduledFunction
from schedlog.projections.queries import DueJob

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

    from schedlog.actors.ports import Clock

__all__ = ["ExecutionHost", "ExecutorActor", "Invocation", "JobRunner", "conflict_backoff_ms"]

log = logging.getLogger(__name__)

CONFLICT_BASE_MS = 100
CONFLICT_CAP_MS = 60_000


def conflict_backoff_ms(attempt: int, rng: random.Random) -> int:
    """Return a full-jitter delay after the `attempt`-th conflict: up to min(100 ms x 2^n, 60 s)."""
    ceiling = min(CONFLICT_BASE_MS * 2 ** min(attempt, 20), CONFLICT_CAP_MS)
    return rng.randint(0, ceiling)


def describe_error(error: BaseException) -> str:
    """Return the message, then the traceback, as `state.error` carries it (S1)."""
    message = "".join(traceback.format_exception_only(error)).strip()
    return f"{message}\n\n{''.join(traceback.format_exception(error)).rstrip()}"


@dataclass(frozen=True, slots=True)
class Invocation:
    """What running a user function produced: its error, or the writes it staged (mutations)."""

    error: str | None
    staged: Sequence[Any] = ()


class ExecutionHost(Protocol):
    """What the runner needs from the App: the store, the registry and the contexts."""

    clock: Clock
    node_id: str

    def load_job(self, job_id: str) -> ScheduledFunction | None:
        """Return the job's aggregate, freshly read, or None if it does not exist."""

    def save(self, *objs: Any) -> None:
        """Save aggregates atomically and tell the timer of new pending jobs.

        Raises `ConflictError` on a version conflict and `StoreError` on other store errors.
        """

    def kind_of(self, name: str) -> FunctionKind | None:
        """Return how the function registered as `name` runs, or None if it is not registered."""

    def invoke(self, job: ScheduledFunction, now_ms: int) -> Invocation:
        """Run the job's function with a fresh context; never raises for the function's errors."""


class JobRunner:
    """Runs one job to the end of one attempt on behalf of an executor."""

    def __init__(self, host: ExecutionHost, rng: random.Random | None = None) -> None:
        self._host = host
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def run(self, job_id: str) -> DueJob | None:
        """Run `job_id` if it is still pending; return when to retry it, if it must be."""
        job = self._host.load_job(job_id)
        if job is None or job.state is not JobState.PENDING:
            return None  # finished, canceled or claimed meanwhile
        # S8: looked up again when it runs; `invoke` fails a function no longer registered.
        kind = self._host.kind_of(job.name) or job.kind
        if kind is FunctionKind.MUTATION:
            return self._run_mutation(job)
        self._run_action(job)
        return None

    def _run_mutation(self, job: ScheduledFunction) -> DueJob | None:
        # 1. Run the function against a context that only stages its writes.
        started = self._host.clock.now_ms()
        result = self._host.invoke(job, started)
        # 2. One atomic save: the staged writes, Started, Completed and the children (S14);
        #    a failure keeps nothing the function staged (S16). The job's version is the claim.
        job.start(self._host.node_id, started)
        finished = self._host.clock.now_ms()
        if result.error is None:
            job.complete(Outcome.SUCCESS, finished)
            objs: tuple[Any, ...] = (job, *result.staged)
        else:
            job.complete(Outcome.FAILED, finished, result.error)
            objs = (job,)
        try:
            self._host.save(*objs)
        except ConflictError as conflict:
            # 3. Someone else moved first: a cancel, another node, or a concurrent write to
            #    an aggregate the mutation read. Retry unless the job is no longer pending (S15).
            return self._retry(job.job_id, conflict)
        return None

    def _retry(self, job_id: str, error: BaseException) -> DueJob | None:
        while True:
            job = self._host.load_job(job_id)
            if job is None or job.state is not JobState.PENDING:
                return None
            now = self._host.clock.now_ms()
            next_run = now + conflict_backoff_ms(job.attempt, self._rng)
            job.retry(at_ms=now, error=describe_error(error), next_run_ms=next_run)
            try:
                self._host.save(job)
            except ConflictError:
                continue  # the job itself changed; look again
            log.info("job %s conflicted; retry at %d", job_id, next_run, extra={"job_id": job_id})
            return DueJob(next_run, 0, job_id)

    def _run_action(self, job: ScheduledFunction) -> None:
        # 1. Claim: Started is saved before the function runs (S17). A lost claim means
        #    another node started it or a cancel landed; either way it is not ours.
        now = self._host.clock.now_ms()
        job.start(self._host.node_id, now)
        try:
            self._host.save(job)
        except ConflictError:
            return
        # 2. Run; its scheduling calls and run_mutation calls take effect at once (S18).
        result = self._host.invoke(job, now)
        # 3. Record the outcome; after a cancel it is kept for the audit only (S21).
        outcome = Outcome.SUCCESS if result.error is None else Outcome.FAILED
        job.complete(outcome, self._host.clock.now_ms(), result.error)
        self._save_outcome(job)

    def _save_outcome(self, job: ScheduledFunction) -> None:
        """Save a completion, re-reading the job if a cancel got in between."""
        pending = list(job.pending_events)
        while True:
            try:
                self._host.save(job)
            except ConflictError:
                fresh = self._host.load_job(job.job_id)
                if fresh is None or fresh.state not in (JobState.IN_PROGRESS, JobState.CANCELED):
                    return
                if fresh.state is JobState.CANCELED and fresh.outcome is not None:
                    return
                completed = pending[-1]
                assert isinstance(completed, ScheduledFunction.Completed)  # noqa: S101
                fresh.complete(Outcome(completed.outcome), completed.at_ms, completed.error)
                job = fresh
            else:
                return


class ExecutorActor(pykka.ThreadingActor):
    """One execution slot: runs the jobs the timer hands it, one at a time."""

    use_daemon_thread = True  # a function stuck past the stop timeout must not pin the process

    def __init__(self, runner: JobRunner, timer: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self._runner = runner
        self._timer = timer

    def on_receive(self, message: Any) -> Any:
        """Run a `RunJob`, then tell the timer the slot is free."""
        match message:
            case RunJob(job_id):
                retry: DueJob | None = None
                try:
                    retry = self._runner.run(job_id)
                except Exception:
                    # The store failed past what the runner handles. The job keeps its
                    # durable state (a mutation stays pending) and is picked up again later.
                    log.exception(
                        "executor: job %s failed to run", job_id, extra={"job_id": job_id}
                    )
                self._timer.tell(JobFinished(job_id, self.actor_ref, retry))
            case _:
                log.warning("executor: unexpected message %r", message)
        return None

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Log the crash; the App sees the dead actor and refuses further work."""
        log.error("executor actor died", exc_info=(exception_type, exception_value, traceback))  # type: ignore[arg-type]
