"""The schedulers: `app.scheduler`, an action's and a mutation's `ctx.scheduler` (front door).

Three schedulers share one validation path: the App's and an action's save each call at once
(S11, S18); a mutation's only stages, for its own atomic commit (S11, S14).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Protocol

from schedlog.errors import (
    ArgsTooLargeError,
    ConflictError,
    JobNotFoundError,
    RuntimeClosedError,
    ScheduleValidationError,
    TooManyScheduledError,
)
from schedlog.events import JobState, ScheduledFunction
from schedlog.events.function import canonical_id
from schedlog.events.validation import check_args, due_time_after, due_time_at, unencodable
from schedlog.events.values import MAX_ARGS_BYTES, MAX_SCHEDULED_PER_MUTATION

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from uuid import UUID

    from schedlog.actors.ports import Clock
    from schedlog.projections.queries import ScheduledFunctions
    from schedlog.registry import Registry
    from schedlog.store import JobStore

__all__ = [
    "AppScheduler",
    "Core",
    "MutationScheduler",
    "Scheduler",
    "action_scheduler",
    "born_under",
]

log = logging.getLogger(__name__)

WARN_FRACTION = 0.8


class Core(Protocol):
    """What the schedulers and contexts need of the App."""

    clock: Clock
    registry: Registry
    store: JobStore
    scheduled_functions: ScheduledFunctions

    def save(self, *objs: Any, reads: Mapping[UUID, int] | None = None) -> None:
        """Save atomically and tell the timer of new pending jobs.

        `reads`: the versions a mutation read aggregates at; the save conflicts if one moved.
        """

    def check_accepting(self) -> None:
        """Raise RuntimeClosedError if the runtime was started and has died."""


def _job_id_arg(job_id: object) -> str:
    """Return a cancel's `job_id` in its canonical text, or refuse a value that is not an id."""
    if not isinstance(job_id, str) or not job_id.strip():
        got = type(job_id).__name__ if not isinstance(job_id, str) else repr(job_id)
        raise ScheduleValidationError(
            f"job_id must be a job's id (a str), got {got}", field="job_id", value=job_id
        )
    return canonical_id(job_id)


def _load_for_cancel(core: Core, job_id: object) -> ScheduledFunction:
    job_id = _job_id_arg(job_id)
    job = core.store.load_job(job_id)
    if job is None:
        raise JobNotFoundError(job_id)
    return job


class Scheduler:
    """`run_after`, `run_at` and `cancel`; each call is durable when it returns (S11)."""

    def __init__(self, core: Core, parent_id: str | None = None) -> None:
        self._core = core
        self._parent_id = parent_id

    def _now(self) -> int:
        return self._core.clock.now_ms()

    def run_after(self, delay_ms: object, fn: object, /, *args: Any, **kwargs: Any) -> str:
        """Schedule `fn(*args, **kwargs)` to run `delay_ms` milliseconds from now (S4)."""
        now = self._now()
        return self._schedule(due_time_after(delay_ms, now), now, fn, args, kwargs)

    def run_at(self, when: object, fn: object, /, *args: Any, **kwargs: Any) -> str:
        """Schedule `fn(*args, **kwargs)` at `when`: epoch ms or an aware datetime (S5)."""
        now = self._now()
        return self._schedule(due_time_at(when, now), now, fn, args, kwargs)

    def _schedule(
        self, due: int, now: int, fn: object, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> str:
        registered = self._core.registry.resolve(fn)
        copied_args, copied_kwargs, size = check_args(args, kwargs)
        registered.check_call(args, kwargs)
        job = ScheduledFunction.schedule(
            name=registered.name,
            kind=registered.kind,
            args=copied_args,
            kwargs=copied_kwargs,
            scheduled_time_ms=due,
            creation_time_ms=now,
            parent_id=self._parent_id,
        )
        self._accept(job, size)
        return job.job_id

    def _accept(self, job: ScheduledFunction, size: int) -> None:
        del size
        self._core.check_accepting()
        self._core.save(job)

    def cancel(self, job_id: str) -> None:
        """Cancel a pending or running job; a finished one is left alone (S20, S21, S23)."""
        self._cancel(job_id)

    def _cancel(self, job_id: str) -> bool:
        """Cancel `job_id`; return whether this call canceled it (False: already finished)."""
        self._core.check_accepting()
        while True:
            job = _load_for_cancel(self._core, job_id)
            if job.is_terminal:
                return False
            job.cancel(self._now())
            try:
                self._core.save(job)
            except ConflictError:
                continue  # it moved meanwhile: decide again on the fresh state
            return True


class AppScheduler(Scheduler):
    """The App's scheduler, for application code; adds `cancel_all` (S24)."""

    def cancel_all(self, name: object = None, before_ms: float | None = None) -> int:
        """Cancel pending and running jobs, optionally only of `name` or due before `before_ms`.

        Returns how many jobs this call canceled.
        """
        self._core.check_accepting()
        if name is not None and not isinstance(name, str):
            if not callable(name):
                raise ScheduleValidationError(
                    f"name must be a function's registered name (a str) or the function, "
                    f"got {type(name).__name__}",
                    field="name",
                    value=name,
                )
            name = self._core.registry.resolve(name).name
        if name is not None and (why := unencodable(name)) is not None:
            raise ScheduleValidationError(f"name {why}", field="name", value=name)
        given: object = before_ms  # checked as the caller may pass anything
        if given is not None and (
            isinstance(given, bool)
            or not isinstance(given, (int, float))
            or (isinstance(given, float) and math.isnan(given))
        ):
            raise ScheduleValidationError(
                f"before_ms must be a number of ms, got {before_ms!r}",
                field="before_ms",
                value=before_ms,
            )
        ids = self._core.scheduled_functions.unfinished_ids(name, before_ms)
        return sum(self._cancel(job_id) for job_id in ids)


class _ActionScheduler(Scheduler):
    """An action's scheduler: saves at once; once the action is canceled, jobs are born canceled.

    S21: a job scheduled after the cancel gets `Scheduled` and `Canceled` in one save. The
    save checks the action's version as read: a cancel landing between that read and the
    save makes it conflict, and the job is then born canceled.
    """

    def _accept(self, job: ScheduledFunction, size: int) -> None:
        assert self._parent_id is not None  # noqa: S101 - set by ActionCtx
        del size
        self._core.check_accepting()
        events = list(job.pending_events)
        while True:
            reads = born_under(self._core, self._parent_id, [job])
            try:
                self._core.save(job, reads=reads)
            except ConflictError:
                if not reads:
                    raise
                job.pending_events[:] = events  # the failed save took them: look again
                continue
            return


def born_under(core: Core, parent_id: str, jobs: Sequence[ScheduledFunction]) -> dict[UUID, int]:
    """Cancel `jobs` if their parent action is canceled (S21); else return its version read.

    Their save checks that version (`reads`): if a cancel lands meanwhile, it conflicts.
    """
    parent = core.store.load_job(parent_id)
    if parent is None:
        return {}
    if parent.state is JobState.CANCELED:
        for job in jobs:
            if not job.is_terminal:
                job.cancel(job.creation_time_ms)
        return {}
    return {parent.id: parent.version}


class MutationScheduler(Scheduler):
    """A mutation's scheduler: stages jobs for the mutation's commit, within S10's limits."""

    def __init__(
        self, core: Core, job_id: str | None, now_ms: int, *, name: str, own: bool = True
    ) -> None:
        super().__init__(core, parent_id=job_id)
        self._job_id = job_id
        self._own = own  # False for ctx.run_mutation: job_id is then the calling action's
        self._name = name
        self._now_ms = now_ms
        self.staged: dict[str, ScheduledFunction] = {}
        self.born: list[ScheduledFunction] = []
        """The jobs it scheduled (the rest of `staged` are jobs it cancels)."""
        self._count = 0
        self._size = 0
        self.finished = False
        """The mutation returned: what it stages now would be dropped without a word."""

    def _now(self) -> int:
        return self._now_ms  # S7: frozen for the whole attempt

    def check_open(self) -> None:
        """Refuse to stage anything once the mutation has returned (its commit is made)."""
        if self.finished:
            raise RuntimeClosedError(
                f"mutation {self._name!r} ({self._runs_as()}) has returned: its ctx stages "
                "nothing more (schedule from application code, or from the function itself)"
            )

    def _schedule(
        self, due: int, now: int, fn: object, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> str:
        self.check_open()
        if self._count >= MAX_SCHEDULED_PER_MUTATION:
            raise TooManyScheduledError(
                "too many functions scheduled by this mutation "
                f"(limit: {MAX_SCHEDULED_PER_MUTATION})",
                field="scheduler",
                value=self._count + 1,
            )
        return super()._schedule(due, now, fn, args, kwargs)

    def _accept(self, job: ScheduledFunction, size: int) -> None:
        if self._size + size > MAX_ARGS_BYTES:
            raise ArgsTooLargeError(
                f"the arguments of the functions scheduled by this mutation would total "
                f"{self._size + size} bytes; the limit is {MAX_ARGS_BYTES} (16 MiB)",
                field="args",
                value=self._size + size,
            )
        for used, added, limit, what in (
            (self._count, 1, MAX_SCHEDULED_PER_MUTATION, "functions scheduled"),
            (self._size, size, MAX_ARGS_BYTES, "bytes of arguments"),
        ):
            if used < WARN_FRACTION * limit <= used + added:
                log.warning(
                    "mutation %r (%s): over 80%% of the limit of %s (%d)",
                    self._name,
                    self._runs_as(),
                    what,
                    limit,
                    extra={"job_id": self._job_id},
                )
        self._count += 1
        self._size += size
        self.staged[job.job_id] = job
        self.born.append(job)

    def _runs_as(self) -> str:
        """How this mutation runs, for its log lines: as a job, or inline and for whom."""
        if self._own:
            return f"job {self._job_id}"
        if self._job_id is None:
            return "app.run_mutation"
        return f"ctx.run_mutation of action {self._job_id}"

    def cancel(self, job_id: str) -> None:
        """Stage a cancel, committed with the mutation (S22); a mutation cannot cancel itself."""
        self.check_open()
        job_id = _job_id_arg(job_id)
        if self._own and job_id == self._job_id:
            raise ScheduleValidationError(
                "a mutation cannot cancel itself", field="job_id", value=job_id
            )
        job = self.staged.get(job_id) or _load_for_cancel(self._core, job_id)
        if not job.is_terminal:
            # When the call is made, not the frozen `ctx.now_ms`: the job may have started
            # since (its history stays in time order, and so does a replay as of an instant).
            job.cancel(max(self._now_ms, self._core.clock.now_ms()))
            self.staged[job_id] = job


def action_scheduler(core: Core, job_id: str) -> Scheduler:
    """Return the scheduler of the action `job_id`: its calls save at once (S18)."""
    return _ActionScheduler(core, parent_id=job_id)
