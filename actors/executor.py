"""ExecutorActor: one execution slot, running the jobs the timer hands it (runtime).

`max_concurrency` executors bound how many functions run at once (S13); each runs one job, or a
batch of a backlog's jobs one after another (`BatchRunner`), on its own thread.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import pykka

from schedlog.actors.base import RuntimeActor
from schedlog.actors.batch import Batch
from schedlog.actors.messages import JobsFinished, RunJob, SlotFree
from schedlog.actors.retry import Fault, classify

if TYPE_CHECKING:
    from schedlog.actors.batch import BatchRunner
    from schedlog.projections.queries import DueJob

__all__ = ["ExecutorActor"]

log = logging.getLogger(__name__)


class ExecutorActor(RuntimeActor):
    """One execution slot: runs the jobs the timer hands it, one at a time."""

    def __init__(self, runner: BatchRunner, timer: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self._runner = runner
        self._timer = timer

    def on_receive(self, message: Any) -> Any:
        """Run a `RunJob`, then tell the timer the slot is free (and when to retry, if need be).

        If the jobs' last save is still under way, the slot is free at once and their
        `JobsFinished` follows when the save ends.
        """
        match message:
            case RunJob((job_id,), not_before):
                self._run_one(job_id, not_before)
            case RunJob(job_ids):
                self._run_batch(job_ids)
            case _:
                log.warning("executor: unexpected message %r", message)
        return None

    def _run_one(self, job_id: str, not_before: int) -> None:
        try:
            outcome = self._runner.run(job_id, not_before)
        except Exception as error:
            outcome = self._could_not_run(job_id, error)
        if isinstance(outcome, Future):
            self._tell(SlotFree(self.actor_ref))
            outcome.add_done_callback(functools.partial(self._committed_one, job_id))
        else:
            self._tell(JobsFinished(((job_id, outcome),), self.actor_ref))

    def _run_batch(self, job_ids: tuple[str, ...]) -> None:
        try:
            batch = self._runner.run_batch(job_ids)
        except Exception as error:
            batch = Batch({job_id: self._could_not_run(job_id, error) for job_id in job_ids})
        finished = tuple(batch.decided.items())
        self._tell(JobsFinished(finished, self.actor_ref, batch.returned))
        if batch.commit is not None:
            batch.commit.add_done_callback(functools.partial(self._committed, batch.committing))

    def _could_not_run(self, job_id: str, error: Exception) -> DueJob:
        # The store failed where the runner could not record anything. The job keeps its
        # durable state (pending, or in progress under its lease); try it after a backoff.
        log.error("executor: job %s could not run", job_id, exc_info=error)
        fault = classify(error)
        return self._runner.later(job_id, Fault.TRANSIENT if fault is Fault.PERMANENT else fault, 1)

    def _committed_one(self, job_id: str, future: Future[DueJob | None]) -> None:
        """On a commit thread: the job's last save ended; tell the timer."""
        try:
            retry = future.result()
        except Exception as error:
            retry = self._could_not_run(job_id, error)
        self._tell_finished(((job_id, retry),))

    def _committed(
        self, job_ids: tuple[str, ...], future: Future[dict[str, DueJob | None]]
    ) -> None:
        """On a commit thread: a batch's final save ended; tell the timer."""
        try:
            decided = future.result()
        except Exception as error:
            decided = {job_id: self._could_not_run(job_id, error) for job_id in job_ids}
        self._tell_finished(tuple((job_id, decided.get(job_id)) for job_id in job_ids))

    def _tell_finished(self, finished: tuple[tuple[str, DueJob | None], ...]) -> None:
        self._tell(JobsFinished(finished, None))

    def _tell(self, message: JobsFinished | SlotFree) -> None:
        """Tell the timer; once it has stopped (a function outlasted the stop), nobody listens."""
        with contextlib.suppress(pykka.ActorDeadError):
            self._timer.tell(message)
