"""BatchRunner: a backlog's jobs run one after another in one executor, sharing saves (runtime).

When the timer is behind on a backlog, it hands each idle executor several due jobs (S13).
Mutations of a batch commit in one save; if it fails (a conflict, say), each one's commit is
tried on its own, as a lone attempt's would be (S14, S15, S22). Actions are claimed
(`Started` saved, S17) before they run, each claim sharing a save with the outcomes of the
actions run before it. A quick action's cost is mostly that claim's commit, so quick actions
are claimed up to `CHUNK_MAX` at a time and then run one after another (`_Chunks`):
`inProgress` then counts the claimed ones waiting their turn too, and a crash meanwhile fails
them unrun, as it fails a running one (S19): at most once, never twice; a cancel landing on
one is a cancel in progress (S21: it still runs, its state stays canceled). Other actions are
claimed alone. A batch that runs out of time hands its jobs not started back.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from schedlog.actors.retry import Fault
from schedlog.actors.runner import Attempt, JobRunner, completed_event
from schedlog.events import ConflictError, FunctionKind, JobState, ScheduledFunction
from schedlog.projections.queries import DueJob
from schedlog.projections.reads import combined_reads

if TYPE_CHECKING:
    from collections.abc import Sequence
    from concurrent.futures import Future
    from uuid import UUID

__all__ = ["BATCH_BUDGET_MS", "CHUNK_MAX", "QUICK_MS", "Batch", "BatchRunner"]

log = logging.getLogger(__name__)

CHUNK_MAX = 32
"""The most actions of a batch claimed in one save (see `_Chunks`).

The price of a larger chunk: a crash fails more claimed actions that had not started (at
most this many per executor, and only while a backlog drains). Measured (W2(b), 10,000 quick
actions already stored, worker in its own process, runs interleaved on 2026-12-03): with the
timer's batches of 32, 3,551-4,904 jobs/s at 8 against 4,434-5,389 at 32 (6 runs each, 32
ahead in each pair); 64 was no better than 32."""
QUICK_MS = 2
"""An action whose function ran in less than this the last time (on the injected clock) is
claimed with others; any other alone."""
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._quick: dict[str, bool] = {}  # registered function name -> it ran quickly last

    def run_batch(self, job_ids: Sequence[str]) -> Batch:
        """Run several due jobs in turn, read in one query; their claims and commits share saves.

        Mutations commit together at the end (`_commit_mutations` says what happens if that
        save fails). Actions are claimed in chunks (`_Chunks`), each claim sharing a save with
        the outcomes of the chunk before it. Jobs not started within `BATCH_BUDGET_MS`, or once
        the runtime is closing, are `returned` to the timer untouched.
        """
        host = self._host
        begun = host.clock.now_ms()
        jobs = host.load_jobs(job_ids)
        decided: dict[str, DueJob | None] = {}
        returned: list[str] = []
        attempts: list[Attempt] = []
        actions = _Chunks(self, decided)
        for job_id in job_ids:
            job = jobs.get(job_id)
            if job is not None and job.next_run_ms > begun and self.unsure.holds(job_id):
                decided[job_id] = DueJob(job.next_run_ms, 0, job_id)  # claimed ahead: not yet
                continue
            if job is not None and self.unsure.take(job):
                actions.flush()  # the actions before it start first (S13)
                self._act(job)  # this node's claim, landed though its answer was lost
                actions.previous.append(job)  # its outcome goes with the next save
                continue
            if job is None or job.state is not JobState.PENDING:
                decided[job_id] = None
            elif job.next_run_ms > begun:
                decided[job_id] = DueJob(job.next_run_ms, 0, job_id)
            elif self.closing.is_set() or host.clock.now_ms() - begun > BATCH_BUDGET_MS:
                returned.append(job_id)
            elif (host.kind_of(job.name) or job.kind) is FunctionKind.MUTATION:
                actions.flush()  # the actions before it start first (S13)
                attempts.append(self._attempt_mutation(job))
            else:
                actions.add(job)
        actions.flush()
        previous = actions.previous
        if not attempts and not previous:
            return Batch(decided, tuple(returned))
        committing = tuple(attempt[0].job_id for attempt in attempts)
        committing += tuple(job.job_id for job in previous)
        final = functools.partial(self._commit_batch, attempts, previous)
        if self._commits is None:
            return Batch({**decided, **final()}, tuple(returned))
        return Batch(decided, tuple(returned), self._commits.submit(final), committing)

    def claim_and_run(
        self,
        chunk: list[ScheduledFunction],
        previous: list[ScheduledFunction],
        decided: dict[str, DueJob | None],
    ) -> list[ScheduledFunction]:
        """Claim `chunk` in one save with `previous`'s outcomes, run it; return those run.

        How long each took (on the injected clock) says whether its function is quick.
        """
        claimed = self._claim_chunk(chunk, previous, decided)
        clock = self._host.clock
        for job in claimed:
            began = clock.now_ms()
            self._act(job)
            if self._host.kind_of(job.name) is not None:  # a name no longer registered: failed
                self._quick[job.name] = clock.now_ms() - began < QUICK_MS
        return claimed

    def is_quick(self, name: str) -> bool:
        """Tell whether the function `name` ran in under `QUICK_MS` the last time it ran here."""
        return self._quick.get(name, False)

    def _claim_chunk(
        self,
        chunk: list[ScheduledFunction],
        previous: list[ScheduledFunction],
        decided: dict[str, DueJob | None],
    ) -> list[ScheduledFunction]:
        """Claim `chunk` in one save with `previous`'s outcomes; return the jobs claimed.

        If that save fails, the outcomes are saved on their own, and each job is claimed alone
        on a fresh read.
        """
        now = self._host.clock.now_ms()
        for job in chunk:
            job.start(self._host.node_id, now, now + self._host.lease_ms)
        for job in previous:
            decided[job.job_id] = None
        if self._save_outcomes(previous, chunk):
            return chunk
        return [job for job in map(functools.partial(self._claim_alone, decided), chunk) if job]

    def _save_outcomes(
        self, done: list[ScheduledFunction], claims: list[ScheduledFunction] | None = None
    ) -> bool:
        """Save the outcomes of `done` (with `claims`, if any) in one save; True if it landed.

        If it fails, each outcome is then saved on its own, on a fresh read, until it lands;
        the claims are lost (their events went with the failed save).
        """
        completed = [completed_event(job) for job in done]
        try:
            self._save(*done, *(claims or ()))
        except Exception as error:
            log.debug(
                "saving %d outcomes and %d claims failed (%s)", len(done), len(claims or ()), error
            )
        else:
            return True
        for job, event in zip(done, completed, strict=True):
            self._record_outcome(job.job_id, None, event)
        return False

    def _claim_alone(
        self, decided: dict[str, DueJob | None], job: ScheduledFunction
    ) -> ScheduledFunction | None:
        """Claim `job` on a fresh read; return it if claimed (else say in `decided` what next)."""
        try:
            fresh = self._host.load_job(job.job_id)
            if fresh is not None and self.is_our_claim(fresh, job):
                return fresh  # the chunk's claim landed though its answer was lost
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
        last: list[ScheduledFunction],
    ) -> dict[str, DueJob | None]:
        """Save the batch's mutations' commits, then its last actions' outcomes (one save)."""
        decided: dict[str, DueJob | None] = {}
        if attempts:
            decided.update(self._commit_mutations(attempts))
        if last:
            self._save_outcomes(last)
        decided.update((job.job_id, None) for job in last)
        return decided

    def _commit_mutations(self, attempts: list[Attempt]) -> dict[str, DueJob | None]:
        """Commit the mutations in one save; if it fails, once more without the jobs that moved.

        A job canceled or run by another node meanwhile is dropped (S22); if the save still
        fails (two mutations wrote one aggregate, say), each commit is tried alone, as a lone
        attempt's would be: a conflict is retried with backoff (S15).
        """
        if self._save_together(attempts) is None:
            return {attempt[0].job_id: None for attempt in attempts}
        decided: dict[str, DueJob | None] = {}
        try:
            fresh = self._host.load_jobs([attempt[0].job_id for attempt in attempts])
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
                return {**decided, **{attempt[0].job_id: None for attempt in kept}}
            attempts = kept
        for job, staged, started, reads in attempts:
            decided[job.job_id] = self._commit_mutation(job, staged, started, reads)
        return decided

    def _save_together(self, attempts: list[Attempt]) -> BaseException | None:
        """Save the attempts' objects in one save; on failure, give them their events back.

        The mutations ran one after another, each on what was committed before the batch:
        together they are one save only if none read an aggregate that one before it writes
        (else the later one would commit what it computed from a stale read; one by one, its
        commit conflicts and it runs again, S14). Each aggregate read is checked at the
        earliest version any of them read it at.
        """
        reads: dict[UUID, int] | None = {}
        if any(attempt[3] for attempt in attempts):  # most mutations read nothing
            reads = combined_reads(
                (read, (o.id for o in staged)) for _, staged, _, read in attempts
            )
            if reads is None:
                return ConflictError("a mutation of the batch read what one before it writes")
        objs = [obj for _, staged, _, _ in attempts for obj in staged]
        pending = [(obj, list(obj.pending_events)) for obj in objs]
        try:
            self._save(*objs, reads=reads)
        except Exception as error:
            log.debug("committing %d mutations together failed (%s)", len(attempts), error)
            for obj, events in pending:  # the failed save took them
                obj.pending_events[:] = events
            return error
        return None


class _Chunks:
    """A batch's actions: the chunk gathered for the next claim, and the last chunk run.

    Actions claimed together wait for one another, so only quick ones share a claim (their
    function ran in under `QUICK_MS` the last time), up to `CHUNK_MAX` of them: for them the
    claim's commit is most of the cost of running. Any other action is claimed alone.
    """

    def __init__(self, runner: BatchRunner, decided: dict[str, DueJob | None]) -> None:
        self._runner = runner
        self._decided = decided
        self._chunk: list[ScheduledFunction] = []
        self.previous: list[ScheduledFunction] = []
        """The actions run last, their outcomes not saved yet."""

    def add(self, job: ScheduledFunction) -> None:
        """Add a due action; claim and run the chunk once it is full, or the action alone."""
        if not self._runner.is_quick(job.name):
            self.flush()  # the quick ones before it start first (S13)
            self._chunk.append(job)
            self.flush()
            return
        self._chunk.append(job)
        if len(self._chunk) >= CHUNK_MAX:
            self.flush()

    def flush(self) -> None:
        """Claim the chunk gathered so far (with the last outcomes) and run it."""
        if self._chunk:
            chunk, self._chunk = self._chunk, []
            self.previous = self._runner.claim_and_run(chunk, self.previous, self._decided)
