"""BatchRunner: a backlog's jobs run one after another in one executor, sharing saves (runtime).

When the timer is behind on a backlog, it hands each idle executor several due jobs (S13).
Mutations of a batch commit in one save; if it fails (a conflict, say), each one's commit is
tried on its own, as a lone attempt's would be (S14, S15, S22). Each action's claim
shares a save with the outcome of the action before it, so only the running action is
`inProgress` (S17). A batch that runs out of time hands its jobs not started back.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from schedlog.actors.retry import Fault
from schedlog.actors.runner import JobRunner, completed_event
from schedlog.events import FunctionKind, JobState, ScheduledFunction
from schedlog.projections.queries import DueJob

if TYPE_CHECKING:
    from collections.abc import Sequence
    from concurrent.futures import Future

__all__ = ["BATCH_BUDGET_MS", "Batch", "BatchRunner"]

log = logging.getLogger(__name__)

BATCH_BUDGET_MS = 100
"""How long an executor keeps starting the jobs of one batch; the rest go back to the timer
(so one slow job does not hold the others while executors are free)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """What running a batch decided: each job's retry (or None) now, and the rest later.

    `returned` jobs were not started (the batch ran out of time): they wait in the timer's
    queue again as they were. `commit` holds the batch's final save, under way on a commit
    thread, with its answers for the jobs in `committing`.
    """

    decided: dict[str, DueJob | None]
    returned: tuple[str, ...] = ()
    commit: Future[dict[str, DueJob | None]] | None = None
    committing: tuple[str, ...] = ()


Attempt = tuple[ScheduledFunction, tuple[Any, ...], int]
"""A mutation run and not committed yet: its job, what its commit saves, when it started."""


class BatchRunner(JobRunner):
    """A `JobRunner` that also runs batches."""

    def run_batch(self, job_ids: Sequence[str]) -> Batch:
        """Run several due jobs in turn, read in one query; their claims and commits share saves.

        Mutations commit together at the end (`_commit_mutations` says what happens if that
        save fails). Each action's claim shares a save with the outcome of the action before
        it. Jobs not started within `BATCH_BUDGET_MS`, or once the runtime is closing, are
        `returned` to the timer untouched.
        """
        host = self._host
        begun = host.clock.now_ms()
        jobs = host.load_jobs(job_ids)
        decided: dict[str, DueJob | None] = {}
        returned: list[str] = []
        attempts: list[Attempt] = []
        previous: ScheduledFunction | None = None  # the last action run, its outcome unsaved
        for job_id in job_ids:
            job = jobs.get(job_id)
            if job is None or job.state is not JobState.PENDING:
                decided[job_id] = None
            elif job.next_run_ms > begun:
                decided[job_id] = DueJob(job.next_run_ms, 0, job_id)
            elif self.closing.is_set() or host.clock.now_ms() - begun > BATCH_BUDGET_MS:
                returned.append(job_id)
            elif (host.kind_of(job.name) or job.kind) is FunctionKind.MUTATION:
                attempts.append(self._attempt_mutation(job))
            else:
                claimed = self._claim_after(job, previous, decided)
                if claimed is not None:
                    self._act(claimed)
                previous = claimed
        if not attempts and previous is None:
            return Batch(decided, tuple(returned))
        committing = tuple(job.job_id for job, _, _ in attempts)
        if previous is not None:
            committing += (previous.job_id,)
        final = functools.partial(self._commit_batch, attempts, previous)
        if self._commits is None:
            return Batch({**decided, **final()}, tuple(returned))
        return Batch(decided, tuple(returned), self._commits.submit(final), committing)

    def _claim_after(
        self,
        job: ScheduledFunction,
        previous: ScheduledFunction | None,
        decided: dict[str, DueJob | None],
    ) -> ScheduledFunction | None:
        """Claim `job` in one save with `previous`'s outcome; return it if claimed.

        If that save fails, the outcome is saved on its own, and the job claimed on a fresh read.
        """
        now = self._host.clock.now_ms()
        job.start(self._host.node_id, now, now + self._host.lease_ms)
        if previous is None:
            objs: tuple[ScheduledFunction, ...] = (job,)
        else:
            objs = (previous, job)
            completed = completed_event(previous)
            decided[previous.job_id] = None
        try:
            self._host.save(*objs)
        except Exception as error:
            log.debug("job %s: claiming it with the last outcome failed (%s)", job.job_id, error)
        else:
            return job
        if previous is not None:
            self._record_outcome(previous.job_id, None, completed)
        try:
            fresh = self._host.load_job(job.job_id)
            if fresh is None or fresh.state is not JobState.PENDING:
                decided[job.job_id] = None
                return None
            ok, retry = self._claim(fresh)
        except Exception as error:
            log.warning("job %s: cannot claim it; later", job.job_id, exc_info=error)
            decided[job.job_id] = self.later(job.job_id, Fault.TRANSIENT, 1)
            return None
        if not ok:
            decided[job.job_id] = retry
            return None
        return fresh

    def _commit_batch(
        self,
        attempts: list[Attempt],
        last: ScheduledFunction | None,
    ) -> dict[str, DueJob | None]:
        """Save the batch's mutations' commits, then its last action's outcome."""
        decided: dict[str, DueJob | None] = {}
        if attempts:
            decided.update(self._commit_mutations(attempts))
        if last is not None:
            self._save_outcome(last)
            decided[last.job_id] = None
        return decided

    def _commit_mutations(self, attempts: list[Attempt]) -> dict[str, DueJob | None]:
        """Commit the mutations in one save; if it fails, once more without the jobs that moved.

        A job canceled or run by another node meanwhile is dropped (S22); if the save still
        fails (two mutations wrote one aggregate, say), each commit is tried alone, as a lone
        attempt's would be: a conflict is retried with backoff (S15).
        """
        if self._save_together(attempts) is None:
            return {job.job_id: None for job, _, _ in attempts}
        decided: dict[str, DueJob | None] = {}
        try:
            fresh = self._host.load_jobs([job.job_id for job, _, _ in attempts])
        except Exception:
            log.warning("cannot read a batch's jobs again; committing one by one", exc_info=True)
            fresh = None
        if fresh is not None:
            kept = []
            for attempt in attempts:
                job = attempt[0]
                now = fresh.get(job.job_id)
                if (
                    now is not None
                    and now.state is JobState.PENDING
                    and now.version == job.version - 2
                ):
                    kept.append(attempt)  # unchanged since it was read (the attempt added 2)
                elif now is None or now.state is not JobState.PENDING:
                    decided[job.job_id] = None  # canceled, or committed elsewhere
                else:
                    decided[job.job_id] = DueJob(now.next_run_ms, 0, job.job_id)
            if len(kept) < len(attempts) and kept and self._save_together(kept) is None:
                return {**decided, **{job.job_id: None for job, _, _ in kept}}
            attempts = kept
        for job, staged, started in attempts:
            decided[job.job_id] = self._commit_mutation(job, staged, started)
        return decided

    def _save_together(self, attempts: list[Attempt]) -> BaseException | None:
        """Save the attempts' objects in one save; on failure, give them their events back."""
        objs = [obj for _, staged, _ in attempts for obj in staged]
        pending = [(obj, list(obj.pending_events)) for obj in objs]
        try:
            self._host.save(*objs)
        except Exception as error:
            log.debug("committing %d mutations together failed (%s)", len(attempts), error)
            for obj, events in pending:  # the failed save took them
                obj.pending_events[:] = events
            return error
        return None
