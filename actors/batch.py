"""BatchRunner: a backlog's jobs run one after another in one executor, sharing saves (runtime).

When more jobs are due than executors are idle, the timer hands each executor several (S13).
Mutations of a batch commit in one save; if it fails (a conflict, say), each is run and
committed again on its own, since nothing of the batch was kept (S14, S22). Each action's claim
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


class BatchRunner(JobRunner):
    """A `JobRunner` that also runs batches."""

    def run_batch(self, job_ids: Sequence[str]) -> Batch:
        """Run several due jobs in turn; their claims and commits share saves.

        Mutations commit together at the end (a save that fails, say on a conflict, is
        retried one mutation at a time, each run again: nothing of the batch was kept).
        Each action's claim shares a save with the outcome of the action before it. Jobs not
        started within `BATCH_BUDGET_MS`, or once the runtime is closing, are `returned` to the
        timer untouched.
        """
        begun = self._host.clock.now_ms()
        decided: dict[str, DueJob | None] = {}
        returned: list[str] = []
        mutations, actions = self._due_of(job_ids, begun, decided)
        attempts = []
        for job in mutations:
            if self._batch_over(begun):
                returned.append(job.job_id)
            else:
                attempts.append(self._attempt_mutation(job))
        last = self._act_in_turn(actions, begun, decided, returned)
        if not attempts and last is None:
            return Batch(decided, tuple(returned))
        committing = tuple(job.job_id for job, _, _ in attempts)
        if last is not None:
            committing += (last.job_id,)
        final = functools.partial(self._commit_batch, attempts, last)
        if self._commits is None:
            return Batch({**decided, **final()}, tuple(returned))
        return Batch(decided, tuple(returned), self._commits.submit(final), committing)

    def _due_of(
        self, job_ids: Sequence[str], now: int, decided: dict[str, DueJob | None]
    ) -> tuple[list[ScheduledFunction], list[ScheduledFunction]]:
        """Read the jobs; return the mutations and the actions due to run (the rest: `decided`)."""
        mutations: list[ScheduledFunction] = []
        actions: list[ScheduledFunction] = []
        for job_id in job_ids:
            try:
                job = self._host.load_job(job_id)
            except Exception as error:
                log.warning("job %s: cannot read it; later", job_id, exc_info=error)
                decided[job_id] = self.later(job_id, Fault.TRANSIENT, 1)
                continue
            if job is None or job.state is not JobState.PENDING:
                decided[job_id] = None
            elif job.next_run_ms > now:
                decided[job_id] = DueJob(job.next_run_ms, 0, job_id)
            elif (self._host.kind_of(job.name) or job.kind) is FunctionKind.MUTATION:
                mutations.append(job)
            else:
                actions.append(job)
        return mutations, actions

    def _batch_over(self, begun: int) -> bool:
        return self.closing.is_set() or self._host.clock.now_ms() - begun > BATCH_BUDGET_MS

    def _act_in_turn(
        self,
        actions: list[ScheduledFunction],
        begun: int,
        decided: dict[str, DueJob | None],
        returned: list[str],
    ) -> ScheduledFunction | None:
        """Claim and run the actions one after another; return the last, its outcome unsaved.

        Each claim shares its save with the outcome of the action before it: one commit per
        action, and never more than the running one claimed (`inProgress` means running, S17).
        """
        previous: ScheduledFunction | None = None
        for job in actions:
            if self._batch_over(begun):
                returned.append(job.job_id)
                continue
            claimed = self._claim_after(job, previous, decided)
            previous = None
            if claimed is not None:
                self._act(claimed)
                previous = claimed
        return previous

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
        attempts: list[tuple[ScheduledFunction, tuple[Any, ...], int]],
        last: ScheduledFunction | None,
    ) -> dict[str, DueJob | None]:
        """Save the batch's mutations' commits, then its last action's outcome."""
        decided: dict[str, DueJob | None] = {}
        if attempts:
            try:
                self._host.save(*(obj for _, objs, _ in attempts for obj in objs))
            except Exception as error:
                log.debug("committing %d mutations together failed (%s)", len(attempts), error)
                decided.update((job.job_id, self._alone(job.job_id)) for job, _, _ in attempts)
            else:
                decided.update((job.job_id, None) for job, _, _ in attempts)
        if last is not None:
            self._save_outcome(last)
            decided[last.job_id] = None
        return decided

    def _alone(self, job_id: str) -> DueJob | None:
        """Run a mutation of a batch that did not commit again, on its own (nothing was kept)."""
        try:
            job = self._host.load_job(job_id)
        except Exception as error:
            log.warning("job %s: cannot read it; later", job_id, exc_info=error)
            return self.later(job_id, Fault.TRANSIENT, 1)
        if job is None or job.state is not JobState.PENDING:
            return None  # a cancel landed, or another node ran it (S22)
        return self._commit_mutation(*self._attempt_mutation(job))
