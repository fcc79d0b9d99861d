"""Mutation and action executors: claim, run, commit, retry with backoff (runtime).

`JobRunner` holds the claim/commit path; `ExecutorActor` is one slot that runs one job at a time
on its own thread, so `max_concurrency` executors bound how many functions run at once (S13).
Store errors are sorted by `retry.classify`: a conflict or a transient error is retried after a
backoff (S15), a permanent one fails the job (S16); an accepted job is never dropped.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import random
import threading
import traceback
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pykka

from schedlog.actors.base import RuntimeActor
from schedlog.actors.messages import JobFinished, RunJob, SlotFree
from schedlog.actors.retry import Fault, backoff_ms, classify
from schedlog.events import ConflictError, FunctionKind, JobState, Outcome, ScheduledFunction
from schedlog.projections.queries import DueJob

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from schedlog.actors.ports import Clock

__all__ = [
    "CommitPool",
    "ExecutionHost",
    "ExecutorActor",
    "Invocation",
    "JobRunner",
    "describe_error",
]

log = logging.getLogger(__name__)

DEFAULT_LEASE_MS = 30_000
"""How long an action's claim lasts unless its node is seen alive (S19)."""


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
    lease_ms: int

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

    def backing_off(self, job_id: str, until_ms: int) -> None:
        """Tell the timer that `job_id`'s executor waits for the store until `until_ms`."""


class CommitPool:
    """Threads that save jobs' final commits, so an executor's slot runs the next job meanwhile.

    Commits submitted together meet in the store's group commit: one transaction, one fsync.
    At most one commit per thread is in flight: `submit` waits for a free one, so a slow disk
    holds the executors back instead of piling up finished work that a crash would lose (a
    mutation whose commit never landed runs again; an action's outcome is reported cut off).
    The threads are daemons, like the actors' (an App still running at exit is stopped first).
    """

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._queue: queue.SimpleQueue[tuple[Callable[[], DueJob | None], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._workers: list[threading.Thread] = []
        self._in_flight = 0
        self._idle = threading.Condition()

    def start(self) -> None:
        """Start the threads (again, after a stop)."""
        self._workers = [
            threading.Thread(target=self._work, name=f"schedlog-commit-{i}", daemon=True)
            for i in range(self._threads)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, commit: Callable[[], DueJob | None]) -> Future[DueJob | None]:
        """Run `commit` on a commit thread; the future holds what it returns (or raised)."""
        future: Future[DueJob | None] = Future()
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight < self._threads)
            self._in_flight += 1
        self._queue.put((commit, future))
        return future

    def stop(self, timeout_s: float) -> bool:
        """Let the commits submitted so far finish (within `timeout_s`); False if some did not."""
        with self._idle:
            done = self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)
        for _ in self._workers:
            self._queue.put(None)
        self._workers = []
        return done

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            commit, future = item
            try:
                future.set_result(commit())
            except BaseException as error:
                future.set_exception(error)
            finally:
                with self._idle:
                    self._in_flight -= 1
                    self._idle.notify_all()


class JobRunner:
    """Runs one job to the end of one attempt on behalf of an executor.

    The function runs on the executor's thread; the attempt's last save (a mutation's commit,
    an action's outcome) is handed to `commits`, and `run` returns its future: the executor is
    free for the next job while the disk syncs, and concurrent commits share one transaction.
    Without `commits` (tests of the runner alone) every save happens inline.
    """

    def __init__(
        self,
        host: ExecutionHost,
        rng: random.Random | None = None,
        commits: CommitPool | None = None,
    ) -> None:
        self._host = host
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._commits = commits
        self.closing = threading.Event()

    def _finish(self, commit: Callable[[], DueJob | None]) -> DueJob | Future[DueJob | None] | None:
        return commit() if self._commits is None else self._commits.submit(commit)

    def run(self, job_id: str) -> DueJob | Future[DueJob | None] | None:
        """Run `job_id` if it is pending and due; return when to try it again, if it must be.

        A future stands for that answer while the attempt's last save is under way.
        """
        job = self._host.load_job(job_id)
        if job is None or job.state is not JobState.PENDING:
            return None  # finished, canceled or claimed meanwhile
        if job.next_run_ms > self._host.clock.now_ms():
            return DueJob(job.next_run_ms, 0, job_id)  # a stale entry: a retry moved it later
        # S8: looked up again when it runs; `invoke` fails a function no longer registered.
        kind = self._host.kind_of(job.name) or job.kind
        if kind is FunctionKind.MUTATION:
            return self._run_mutation(job)
        return self._run_action(job)

    def later(self, job_id: str, fault: Fault, attempt: int) -> DueJob:
        """Return when to try `job_id` again after a `fault` (used when nothing could be saved)."""
        delay = backoff_ms(fault, attempt, self._rng)
        return DueJob(self._host.clock.now_ms() + delay, 0, job_id)

    def _run_mutation(self, job: ScheduledFunction) -> DueJob | Future[DueJob | None] | None:
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
        return self._finish(lambda: self._commit_mutation(job, objs, started))

    def _commit_mutation(
        self, job: ScheduledFunction, objs: tuple[Any, ...], started: int
    ) -> DueJob | None:
        try:
            self._host.save(*objs)
        except Exception as error:
            fault = classify(error)
            if fault is Fault.PERMANENT:
                # 3a. The commit itself cannot succeed (say, an aggregate whose event cannot
                #     be encoded): the mutation fails with that error, its writes dropped (S16).
                return self._fail_alone(job.job_id, started, error)
            # 3b. A cancel, another node, a concurrent write to an aggregate it read, or a
            #     store that is unavailable for now: retry unless no longer pending (S15).
            return self._retry(job.job_id, error, fault)
        return None

    def _fail_alone(self, job_id: str, started: int, error: BaseException) -> DueJob | None:
        log.error("job %s: its commit failed for good", job_id, exc_info=error)
        while True:
            job = self._host.load_job(job_id)
            if job is None or job.state is not JobState.PENDING:
                return None
            job.start(self._host.node_id, started)
            job.complete(Outcome.FAILED, self._host.clock.now_ms(), describe_error(error))
            try:
                self._host.save(job)
            except ConflictError:
                continue
            except Exception as again:
                if classify(again) is Fault.TRANSIENT:
                    return self.later(job_id, Fault.TRANSIENT, job.attempt)
                log.exception("job %s: cannot record its failure", job_id)
                return None
            return None

    def _retry(self, job_id: str, error: BaseException, fault: Fault) -> DueJob | None:
        while True:
            job = self._host.load_job(job_id)
            if job is None or job.state is not JobState.PENDING:
                return None  # another node committed it, or a cancel landed (S15, S22)
            now = self._host.clock.now_ms()
            next_run = now + backoff_ms(fault, job.attempt, self._rng)
            job.retry(at_ms=now, error=describe_error(error), next_run_ms=next_run)
            try:
                self._host.save(job)
            except ConflictError:
                continue  # the job itself changed; look again
            except Exception:
                log.warning("job %s: cannot record the retry; retrying anyway", job_id)
            log.info("job %s: %s; retry at %d", job_id, fault.value, next_run)
            return DueJob(next_run, 0, job_id)

    def _run_action(self, job: ScheduledFunction) -> DueJob | Future[DueJob | None] | None:
        # 1. Claim: Started, with this node and a lease, is saved before the function runs
        #    (S17). A lost claim means another node started it or a cancel landed.
        now = self._host.clock.now_ms()
        job.start(self._host.node_id, now, now + self._host.lease_ms)
        try:
            self._host.save(job)
        except ConflictError:
            return None
        except Exception as error:
            fault = classify(error)
            if fault is Fault.PERMANENT:
                raise
            return self.later(job.job_id, fault, job.attempt)  # not run yet: claim again later
        # 2. Run; its scheduling calls and run_mutation calls take effect at once (S18).
        result = self._host.invoke(job, now)
        # 3. Record the outcome; after a cancel it is kept for the audit only (S21).
        outcome = Outcome.SUCCESS if result.error is None else Outcome.FAILED
        job.complete(outcome, self._host.clock.now_ms(), result.error)
        return self._finish(lambda: self._save_outcome(job))

    def _save_outcome(self, job: ScheduledFunction) -> None:
        """Save an action's completion, through cancels and store outages, until it lands."""
        completed = job.pending_events[-1]
        assert isinstance(completed, ScheduledFunction.Completed)  # noqa: S101
        failures = 0
        while True:
            try:
                self._host.save(job)
            except ConflictError:
                pass
            except Exception as error:
                if classify(error) is not Fault.TRANSIENT:
                    log.exception("job %s: its outcome cannot be saved", job.job_id)
                    return  # left in progress: recovery fails it once its lease runs out
                failures += 1
                delay = backoff_ms(Fault.TRANSIENT, failures, self._rng)
                log.warning("job %s: cannot save its outcome; again in %d ms", job.job_id, delay)
                if not self._pause(job.job_id, delay):
                    return
            else:
                return
            try:
                fresh = self._host.load_job(job.job_id)
            except Exception:
                log.warning("job %s: cannot re-read it; saving again", job.job_id, exc_info=True)
                continue
            if fresh is None or fresh.state not in (JobState.IN_PROGRESS, JobState.CANCELED):
                return
            if fresh.state is JobState.CANCELED and fresh.outcome is not None:
                return
            fresh.complete(Outcome(completed.outcome), completed.at_ms, completed.error)
            job = fresh

    def _pause(self, job_id: str, ms: int) -> bool:
        """Wait `ms` on the injected clock; False if the runtime is closing meanwhile."""
        woken = threading.Event()
        until = self._host.clock.now_ms() + ms
        self._host.backing_off(job_id, until)
        wakeup = self._host.clock.wake_at(until, woken.set)
        while not woken.wait(0.1):
            if self.closing.is_set():
                wakeup.cancel()
                return False
        return True


class ExecutorActor(RuntimeActor):
    """One execution slot: runs the jobs the timer hands it, one at a time."""

    def __init__(self, runner: JobRunner, timer: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self._runner = runner
        self._timer = timer

    def on_receive(self, message: Any) -> Any:
        """Run a `RunJob`, then tell the timer the slot is free (and when to retry, if need be).

        If the job's last save is still under way, the slot is free at once (`SlotFree`) and
        the job's `JobFinished` follows when the save ends.
        """
        match message:
            case RunJob(job_id):
                try:
                    outcome = self._runner.run(job_id)
                except Exception as error:
                    outcome = self._could_not_run(job_id, error)
                if isinstance(outcome, Future):
                    self._timer.tell(SlotFree(job_id, self.actor_ref))
                    outcome.add_done_callback(functools.partial(self._committed, job_id))
                else:
                    self._timer.tell(JobFinished(job_id, self.actor_ref, outcome))
            case _:
                log.warning("executor: unexpected message %r", message)
        return None

    def _could_not_run(self, job_id: str, error: Exception) -> DueJob:
        # The store failed where the runner could not record anything. The job keeps its
        # durable state (pending, or in progress under its lease); try it after a backoff.
        log.error("executor: job %s could not run", job_id, exc_info=error)
        fault = classify(error)
        return self._runner.later(job_id, Fault.TRANSIENT if fault is Fault.PERMANENT else fault, 1)

    def _committed(self, job_id: str, future: Future[DueJob | None]) -> None:
        """On a commit thread: the job's last save ended; tell the timer."""
        try:
            retry = future.result()
        except Exception as error:
            retry = self._could_not_run(job_id, error)
        with contextlib.suppress(pykka.ActorDeadError):
            self._timer.tell(JobFinished(job_id, None, retry))
