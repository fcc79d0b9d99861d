"""MutationCtx and ActionCtx, handed to user functions, and inline mutations (front door)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import BaseAggregate

from schedlog.errors import ConfigurationError, ConflictError
from schedlog.events import FunctionKind, ScheduledFunction
from schedlog.reads import MutationReads
from schedlog.registry import refuse_unrun
from schedlog.scheduler import MutationScheduler, Scheduler, action_scheduler, born_under

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from uuid import UUID

    from eventsourcing.application import Repository

    from schedlog.scheduler import Core


__all__ = ["ActionCtx", "MutationCtx", "run_mutation_now"]

log = logging.getLogger(__name__)

MAX_MUTATION_RUNS = 100
"""How often `ctx.run_mutation` re-runs a mutation that conflicts before giving up."""


class MutationCtx:
    """Handed to a mutation: reads, staged writes and staged scheduling, committed atomically."""

    def __init__(  # noqa: PLR0913 - built by the runtime only
        self,
        core: Core,
        job_id: str | None,
        now_ms: int,
        attempt: int,
        *,
        name: str,
        inline: bool = False,
    ) -> None:
        self.job_id = job_id  # None for app.run_mutation (no job runs it)
        self.now_ms = now_ms
        self.attempt = attempt
        self._aggregates: dict[object, BaseAggregate[Any]] = {}
        self.repository = MutationReads(core.store.repository, self._aggregates)
        self._scheduler = MutationScheduler(core, job_id, now_ms, own=not inline, name=name)
        self.scheduler: Scheduler = self._scheduler

    def finish(self) -> None:
        """Mark the mutation returned: its ctx refuses to stage more (it would be lost)."""
        self._scheduler.finished = True

    def save(self, *aggregates: object) -> None:
        """Stage the aggregates' new events for the mutation's commit.

        One copy per aggregate: `ctx.repository.get` returns the staged one. Saving another
        copy of a staged aggregate is refused (one of the two copies' changes would be lost).
        """
        self._scheduler.check_open()
        for aggregate in aggregates:
            if not isinstance(aggregate, BaseAggregate) or isinstance(aggregate, ScheduledFunction):
                raise ConfigurationError(
                    f"ctx.save takes the app's own eventsourcing aggregates, got {aggregate!r}"
                )
            staged = self._aggregates.setdefault(aggregate.id, aggregate)
            if staged is not aggregate:
                raise ConfigurationError(
                    f"ctx.save: aggregate {aggregate.id} is already staged by this mutation from "
                    "another copy; change the copy ctx.repository.get returns (the staged one)"
                )

    @property
    def reads(self) -> dict[UUID, int]:
        """The versions this mutation read aggregates at, for its commit to check (S14)."""
        return self.repository.versions

    @property
    def staged(self) -> list[Any]:
        """Everything the commit must save: the aggregates, then the scheduled jobs."""
        scheduler = self.scheduler
        assert isinstance(scheduler, MutationScheduler)  # noqa: S101
        return [*self._aggregates.values(), *scheduler.staged.values()]


class ActionCtx:
    """Handed to an action: its scheduling calls and mutations take effect at once (S18)."""

    def __init__(self, core: Core, job_id: str, now_ms: int, attempt: int) -> None:
        self.job_id = job_id
        self.now_ms = now_ms
        self.attempt = attempt
        self.repository: Repository[UUID] = core.store.repository
        self.scheduler: Scheduler = action_scheduler(core, job_id)
        self._core = core

    def run_mutation(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Any:
        """Run a registered mutation now, in its own atomic commit; return what it returns.

        A version conflict re-runs it (up to 100 times); an error it raises propagates.
        """
        return run_mutation_now(self._core, self.job_id, fn, args, kwargs)


def run_mutation_now(
    core: Core,
    caller_id: str | None,
    fn: Callable[..., Any] | str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
) -> Any:
    """Run a registered mutation inline, in its own atomic commit; return what it returns.

    `caller_id` is the calling action's job id (the parent of what the mutation schedules), or
    None from application code. A version conflict re-runs it, up to `MAX_MUTATION_RUNS` times;
    an error it raises propagates and nothing it staged is saved (S14, S16).
    """
    registered = core.registry.resolve(fn)
    if registered.kind is not FunctionKind.MUTATION:
        raise ConfigurationError(f"{registered.name!r} is an action, not a mutation")
    core.check_accepting()
    last: ConflictError | None = None
    for attempt in range(1, MAX_MUTATION_RUNS + 1):
        ctx = MutationCtx(
            core, caller_id, core.clock.now_ms(), attempt, inline=True, name=registered.name
        )
        try:
            result = registered.fn(ctx, *args, **kwargs)
            refuse_unrun(registered.name, result)
        finally:
            ctx.finish()
        reads = ctx.reads
        scheduler = ctx.scheduler
        assert isinstance(scheduler, MutationScheduler)  # noqa: S101
        if caller_id is not None and scheduler.born:  # an action's: its jobs are its (S21)
            reads = {**reads, **born_under(core, caller_id, scheduler.born)}
        try:
            core.save(*ctx.staged, reads=reads)
        except ConflictError as e:
            last = e
            continue
        return result
    assert last is not None  # noqa: S101
    raise last
