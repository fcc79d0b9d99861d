"""JobRunner: one job's attempt, claim to commit, with retries and backoff (runtime).

Store errors are sorted by `retry.classify`: a conflict or a transient error is retried after a
backoff (S15), a permanent one fails the job (S16); an accepted job is never dropped.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

from schedlog.actors.host import describe_error
from schedlog.actors.ports import OwnThreadWaits
from schedlog.actors.retry import Fault, backoff_ms, classify
from schedlog.actors.unsure import UnsureClaims, is_claim
from schedlog.events import ConflictError, FunctionKind, JobState, Outcome, ScheduledFunction
from schedlog.projections.queries import DueJob

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future

    from schedlog.actors.commits import CommitPool
    from schedlog.actors.host import ExecutionHost
    from schedlog.actors.lead import Lead

__all__ = ["DEFAULT_LEASE_MS", "NOT_RUN_CANCELED", "JobRunner", "completed_event"]

log = logging.getLogger(__name__)

NOT_RUN_CANCELED = "canceled before it was due: not run"
"""The outcome's error of an action claimed ahead of its due time and canceled before it."""
CHECK_AHEAD_MS = 2
"""How long before its due time an action claimed ahead looks for a cancel (one read), so
that the read is not part of its start lag (~0.2-0.3 ms at the median, 0.6-1 ms at p90 and
1.4-2.3 ms at p99 in-process under load, 2026-12-03: at 1 ms ahead its tail was in the lag).
A cancel landing after the look is a cancel in progress (S21): the action runs, its state
stays canceled."""
UNSAVED_CAP_MS = 30_000
"""The longest backoff of a try that saved nothing (`JobRunner.later`) and between two tries to
save an outcome (`_record_outcome`): the delays grow through a write outage, but a job still
waits at most this long once the store is back (an action's outcome waited 55 s after a 70 s
outage: it stayed `inProgress` that long)."""
DEFAULT_LEASE_MS = 30_000
"""How long an action's claim lasts unless its node is seen alive (S19)."""


class _Next(enum.Enum):
    """What follows one try at saving an action's outcome."""

    DONE = "done"  # saved, or cannot ever be
    AGAIN = "again"  # a conflict: read the job again now
    WAIT = "wait"  # the store is unavailable: back off first


Attempt = tuple[ScheduledFunction, tuple[Any, ...], int, Mapping[UUID, int]]
"""A mutation run and not committed yet: its job, what its commit saves, when it started, and
the versions it read aggregates at (which its commit checks)."""


def completed_event(job: ScheduledFunction) -> ScheduledFunction.Completed:
    """Return the `Completed` event the job has just triggered (not saved yet)."""
    completed = job.pending_events[-1]
    assert isinstance(completed, ScheduledFunction.Completed)  # noqa: S101
    return completed


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
        lead: Lead | None = None,
    ) -> None:
        self._host = host
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._commits = commits
        self.lead = lead
        """Told how long each action handed over early took to read and claim (the timer's)."""
        self.closing = threading.Event()
        self.unsure = UnsureClaims(lambda: host.node_id)
        self._unsaved: dict[str, int] = {}
        """Each job's tries in a row that could save nothing (a write outage): S15's n counts
        them, written or not, so the backoff grows through an outage; forgotten once a save
        lands."""
        self._unsaved_lock = threading.Lock()
        """Claims whose save raised a store error: they may have landed (see `UnsureClaims`)."""
        """Jobs whose claim's commit gave no answer (a store error): the version and start time
        it claimed them at, to recognise the claim as this node's if it landed after all."""
        clock = host.clock
        self._own_wait = clock if isinstance(clock, OwnThreadWaits) else None

    def _finish(self, commit: Callable[[], DueJob | None]) -> DueJob | Future[DueJob | None] | None:
        return commit() if self._commits is None else self._commits.submit(commit)

    def run(self, job_id: str, not_before: int = 0) -> DueJob | Future[DueJob | None] | None:
        """Run `job_id` if it is pending and due; return when to try it again, if it must be.

        A job handed over before it is due is read at once and started at `not_before`: the
        read is then not part of its start lag, nor is an action's claim (`_run_action`). A
        future stands for that answer while the attempt's last save is under way.
        """
        received = self._host.clock.now_ms()
        job = self._host.load_job(job_id)
        if job is not None and self.unsure.take(job):
            # Its claim's commit landed though the answer was lost: it is this node's, not run.
            start_at = max(not_before, received, job.next_run_ms)  # claimed ahead: not early
            return self._run_action(job, start_at, received, claimed=True)
        if job is None or job.state is not JobState.PENDING:
            return None  # finished, canceled or claimed meanwhile
        start_at = max(not_before, self._host.clock.now_ms())
        if job.next_run_ms > start_at:
            return DueJob(job.next_run_ms, 0, job_id)  # a stale entry: a retry moved it later
        # S8: looked up again when it runs; `invoke` fails a function no longer registered.
        kind = self._host.kind_of(job.name) or job.kind
        if kind is not FunctionKind.MUTATION:
            return self._run_action(job, start_at, received)
        if start_at > self._host.clock.now_ms() and not self._wait_for_start(job_id, start_at):
            return DueJob(start_at, 0, job_id)  # closing: not started, still pending
        return self._run_mutation(job)

    def later(self, job_id: str, fault: Fault, attempt: int) -> DueJob:
        """Return when to try `job_id` again after a `fault` (used when nothing could be saved).

        `attempt` is the job's written one; each try in a row that saved nothing adds one.
        """
        with self._unsaved_lock:
            tries = self._unsaved.get(job_id, 0)
            self._unsaved[job_id] = tries + 1
        cap = UNSAVED_CAP_MS if tries else None
        delay = backoff_ms(fault, attempt + tries, self._rng, cap)
        return DueJob(self._host.clock.now_ms() + delay, 0, job_id)

    def _save(self, *objs: Any, reads: Mapping[UUID, int] | None = None) -> None:
        """Save through the host; a save that lands ends the write outage `later` counts."""
        self._host.save(*objs, reads=reads)
        if self._unsaved:
            with self._unsaved_lock:
                self._unsaved.clear()

    def _run_mutation(self, job: ScheduledFunction) -> DueJob | Future[DueJob | None] | None:
        attempt = self._attempt_mutation(job)
        return self._finish(lambda: self._commit_mutation(*attempt))

    def _attempt_mutation(self, job: ScheduledFunction) -> Attempt:
        """Run a mutation's function; return the job, what its commit saves, when, and reads."""
        # 1. Run the function against a context that only stages its writes.
        started = self._host.clock.now_ms()
        result = self._host.invoke(job, started)
        # 2. One atomic save: the staged writes, Started, Completed and the children (S14);
        #    a failure keeps nothing the function staged (S16). The job's version is the claim.
        job.start(self._host.node_id, started)
        finished = self._host.clock.now_ms()
        if result.error is None:
            job.complete(Outcome.SUCCESS, finished)
            return job, (job, *result.staged), started, result.reads
        job.complete(Outcome.FAILED, finished, result.error)
        return job, (job,), started, {}

    def _commit_mutation(
        self,
        job: ScheduledFunction,
        objs: tuple[Any, ...],
        started: int,
        reads: Mapping[UUID, int] | None = None,
    ) -> DueJob | None:
        try:
            self._save(*objs, reads=reads)
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
                self._save(job)
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
                self._save(job)
            except ConflictError:
                continue  # the job itself changed; look again
            except Exception:
                log.warning("job %s: cannot record the retry; retrying anyway", job_id)
                return self.later(job_id, fault, job.attempt - 1)  # its Retried is not saved
            log.info("job %s: %s; retry at %d", job_id, fault.value, next_run)
            return DueJob(next_run, 0, job_id)

    def _run_action(
        self, job: ScheduledFunction, start_at: int, received: int, *, claimed: bool = False
    ) -> DueJob | Future[DueJob | None] | None:
        # 1. Claim: Started, with this node and a lease, is saved before the function runs
        #    (S17). A lost claim means another node started it or a cancel landed. A job
        #    handed over before it is due is claimed at once, so that the claim's commit is
        #    not part of its start lag. Its Started says when it was claimed: the log records
        #    its events at the time they happened, which replay as of an instant relies on
        #    (S27); the function itself starts at the due time.
        if not claimed:
            claimed, retry = self._claim(job)
            if not claimed:
                return retry
        if start_at > received and self.lead is not None:
            self.lead.observe(self._host.clock.now_ms() - received)  # how early it must come
        if start_at > self._host.clock.now_ms():
            # Look for a cancel just before the due time, then wait out the rest; a closing
            # runtime stops waiting and runs it (claimed: not left in progress).
            waiting = self._wait_for_start(job.job_id, start_at - CHECK_AHEAD_MS)
            if self._canceled_before_start(job):
                # 2'. A cancel landed between the claim and the due time: not run (S20).
                job.complete(Outcome.FAILED, self._host.clock.now_ms(), NOT_RUN_CANCELED)
                return self._finish(lambda: self._save_outcome(job))
            if waiting and start_at > self._host.clock.now_ms():
                self._wait_for_start(job.job_id, start_at, claimed=True)
        # 2. Run; its scheduling calls and run_mutation calls take effect at once (S18).
        self._act(job, start_at)
        # 3. Record the outcome; after a cancel it is kept for the audit only (S21).
        return self._finish(lambda: self._save_outcome(job))

    def _canceled_before_start(self, job: ScheduledFunction) -> bool:
        """Tell whether a cancel landed on a job claimed ahead of its due time (one read)."""
        try:
            if self._host.version_of(job.job_id) == job.version:
                return False
            fresh = self._host.load_job(job.job_id)
        except Exception:
            log.warning("job %s: cannot read it before it starts", job.job_id, exc_info=True)
            return False  # claimed: it runs, as it would have without the look (S21)
        return fresh is not None and fresh.state is JobState.CANCELED

    def _claim(self, job: ScheduledFunction) -> tuple[bool, DueJob | None]:
        """Save the action's `Started`; if lost, also say when to look at it again (or None)."""
        now = self._host.clock.now_ms()
        job.start(self._host.node_id, now, now + self._host.lease_ms)
        try:
            self._save(job)
        except ConflictError:
            return False, None
        except Exception as error:
            fault = classify(error)
            if fault is Fault.PERMANENT:
                raise
            if self.claim_landed(job):  # the commit's answer was lost, not the commit
                return True, None
            self.unsure.note(job)
            return False, self.later(job.job_id, fault, job.attempt)  # not run: claim it later
        return True, None

    def claim_landed(self, job: ScheduledFunction) -> bool:
        """Tell whether `job`'s claim, whose save raised a store error, is in the store."""
        try:
            fresh = self._host.load_job(job.job_id)
        except Exception:  # the store is still out: `run` looks again later
            log.debug("job %s: cannot read it after its claim failed", job.job_id, exc_info=True)
            return False
        return fresh is not None and self.is_our_claim(fresh, job)

    def is_our_claim(self, fresh: ScheduledFunction, claimed: ScheduledFunction) -> bool:
        """Tell whether `fresh` is just as this node's claim `claimed` left it, not run."""
        return is_claim(fresh, self._host.node_id, claimed.version, claimed.started_at_ms)

    def _act(self, job: ScheduledFunction, not_before: int = 0) -> None:
        """Run a claimed action and leave its `Completed` pending.

        Its `ctx.now_ms` is its claim's time, or `not_before` if later (claimed ahead of it).
        """
        claimed = job.started_at_ms if job.started_at_ms is not None else self._host.clock.now_ms()
        started = max(claimed, not_before)
        result = self._host.invoke(job, started)
        outcome = Outcome.SUCCESS if result.error is None else Outcome.FAILED
        job.complete(outcome, self._host.clock.now_ms(), result.error)

    def _save_outcome(self, job: ScheduledFunction) -> None:
        """Save an action's completion, through cancels and store outages, until it lands."""
        self._record_outcome(job.job_id, job, completed_event(job))

    def _record_outcome(
        self,
        job_id: str,
        job: ScheduledFunction | None,
        completed: ScheduledFunction.Completed,
    ) -> None:
        """Save `completed` with `job` (None: on a fresh read of it) until it lands.

        A failed save has taken the aggregate's pending events, so every new try reads the
        job again and completes it anew, unless it ended meanwhile.
        """
        failures = 0
        while True:
            if job is None:
                try:
                    job = self._completed_again(job_id, completed)
                except Exception:
                    log.warning("job %s: cannot re-read it", job_id, exc_info=True)
                else:
                    if job is None:
                        return  # it ended meanwhile
            if job is not None:
                step = self._save_completed(job)
                if step is _Next.DONE:
                    return
                job = None
                if step is _Next.AGAIN:
                    continue  # a cancel landed, say: complete the fresh job at once
            failures += 1
            delay = backoff_ms(Fault.TRANSIENT, failures, self._rng, UNSAVED_CAP_MS)
            log.warning("job %s: cannot save its outcome; again in %d ms", job_id, delay)
            if not self._pause(job_id, delay):
                return

    def _save_completed(self, job: ScheduledFunction) -> _Next:
        """Try to save a completed action once; say what to do next."""
        try:
            self._save(job)
        except ConflictError:
            return _Next.AGAIN
        except Exception as error:
            if classify(error) is Fault.TRANSIENT:
                return _Next.WAIT
            log.exception("job %s: its outcome cannot be saved; recording a failure", job.job_id)
            self._fail_unsaved(job.job_id, error)
            return _Next.DONE
        return _Next.DONE

    def _fail_unsaved(self, job_id: str, error: BaseException) -> None:
        """Record an action whose outcome cannot ever be saved as failed, saying why (S17).

        It would otherwise stay in progress for as long as its node lives (S19's recovery
        fails only the actions of nodes not seen alive).
        """
        try:
            fresh = self._host.load_job(job_id)
            if fresh is None or fresh.outcome is not None:
                return
            if fresh.state not in (JobState.IN_PROGRESS, JobState.CANCELED):
                return
            why = f"its outcome could not be saved: {describe_error(error)}"
            fresh.complete(Outcome.FAILED, self._host.clock.now_ms(), why)
            self._save(fresh)
        except Exception:
            log.exception("job %s: cannot record that its outcome was not saved", job_id)

    def _completed_again(
        self, job_id: str, completed: ScheduledFunction.Completed
    ) -> ScheduledFunction | None:
        """Read the job and complete it as `completed` says; None if nothing is left to record."""
        job = self._host.load_job(job_id)
        if job is None or job.state not in (JobState.IN_PROGRESS, JobState.CANCELED):
            return None
        if job.state is JobState.CANCELED and job.outcome is not None:
            return None
        job.complete(Outcome(completed.outcome), completed.at_ms, completed.error)
        return job

    def _wait_for_start(self, job_id: str, at_ms: int, *, claimed: bool = False) -> bool:
        """Wait for a job's due time, not busy meanwhile (for `settle`); False if closing.

        A claimed action is not left in progress by a closing runtime: it stops waiting and
        runs, at most the timer's lead (`LEAD_MS`, up to `MAX_LEAD_MS`) early on a real clock.
        """
        self._host.backing_off(job_id, at_ms)
        return self._wait_until(at_ms) or claimed

    def _wait_until(self, at_ms: int) -> bool:
        """Wait for `at_ms` on the injected clock; False if the runtime is closing meanwhile."""
        if self._own_wait is not None:  # the wall clock: one wake-up, this thread's own
            return self._own_wait.wait_until(at_ms, self.closing)
        woken = threading.Event()
        wakeup = self._host.clock.wake_at(at_ms, woken.set)
        while not woken.wait(0.1):
            if self.closing.is_set():
                wakeup.cancel()
                return False
        return True

    def _pause(self, job_id: str, ms: int) -> bool:
        """Wait `ms` on the injected clock; False if the runtime is closing meanwhile."""
        until = self._host.clock.now_ms() + ms
        self._host.backing_off(job_id, until)
        return self._wait_until(until)
