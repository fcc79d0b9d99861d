"""The ScheduledFunction aggregate: its five past-tense events and its command methods (domain).

Each public command checks the transition in `state.py`, then triggers its event
(`trigger_event`), whose `apply` only assigns, so replaying the log never re-validates. Every
time is an explicit `*_ms` field passed in by the caller; the domain never reads a clock.

The events are explicit classes with an `apply` (eventsourcing's other style), not `@event`
methods: a decorated command coerces and filters its arguments by signature twice per event,
about 9 us more per event, paid by every schedule, claim and completion. Their topics and
stored fields are the same as the decorated classes wrote (tests/unit/events/test_golden.py).
"""

from __future__ import annotations

import os
from typing import Any
from uuid import UUID, SafeUUID

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from schedlog.events.state import Command, next_state
from schedlog.events.values import TERMINAL_STATES, FunctionKind, JobState, Outcome

__all__ = ["JobId", "ScheduledFunction", "canonical_id"]

_MS_MASK = (1 << 48) - 1
_LOW_62 = (1 << 62) - 1


class JobId(UUID):
    """A job's id: a `UUID` that keeps its text, written once and read several times.

    A job's id is turned to text by its aggregate, its view row and the timer's entry, each
    event it gets: `str(UUID)` costs ~0.7 us each. New jobs (`create_id`) and jobs read in a
    batch (`JobStore.load_jobs`) get one; other reads give plain `UUID`s, and so does a copy or
    a pickle. It equals, hashes and sorts as the `UUID` it is.
    """

    __slots__ = ("_text",)
    _text: str

    def __init__(self, value: int) -> None:
        """Make the id of 128-bit `value`, a valid UUID (`create_id` builds it, or a parse)."""
        object.__setattr__(self, "int", value)
        object.__setattr__(self, "is_safe", SafeUUID.unknown)
        h = f"{value:032x}"  # UUID.__str__'s text, formatted in one step (~1 us less)
        object.__setattr__(self, "_text", f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")

    def __str__(self) -> str:
        return self._text

    def __reduce__(self) -> tuple[type[UUID], tuple[None, None, None, None, int]]:
        return UUID, (None, None, None, None, self.int)


def canonical_id(job_id: str) -> str:
    """Return a job id as the runtime writes it, from any spelling `uuid.UUID` reads (S3).

    Upper case, no hyphens, braces and `urn:uuid:` all name the same job; text that is no UUID
    is returned as it is (no job has it, so a lookup finds nothing).
    """
    try:
        return str(UUID(job_id))
    except (ValueError, TypeError, AttributeError):
        return job_id


class ScheduledFunction(Aggregate):
    """One scheduled call of a registered function, from `Scheduled` to its final state."""

    class Scheduled(Aggregate.Created):
        """The job was accepted: what to run, with which arguments, and when.

        The aggregate's `__init__` takes these fields (the library calls it with them).
        """

        name: str
        kind: str
        args: list[Any]
        kwargs: dict[str, Any]
        scheduled_time_ms: int
        creation_time_ms: int
        parent_id: str | None

        def mutate(self, aggregate: object) -> Any:  # the library types it generically
            """Build the job from this event, as the library's `Created.mutate` does.

            The library resolves the aggregate's topic and filters this event's fields by
            the signatures of `__base_init__` and `__init__` on every call; the job's class
            and fields are fixed, so they are passed as they are (same aggregate, ~3 us less
            per job created or read back).
            """
            del aggregate  # None: this event begins the job
            job = ScheduledFunction.__new__(ScheduledFunction)
            job.__base_init__(self.originator_id, self.originator_version, self.timestamp)
            job.__init__(  # type: ignore[misc] # as the library calls it
                self.name,
                self.kind,
                self.args,
                self.kwargs,
                self.scheduled_time_ms,
                self.creation_time_ms,
                self.parent_id,
            )
            return job

    class Started(Aggregate.Event):
        """An attempt began on a node (for a mutation, saved with its outcome).

        An action's `lease_until_ms` is when its node's claim runs out unless the node is
        still alive (S19); a mutation has none (it commits, or leaves nothing).

        Version 2 added `lease_until_ms`; a version-1 event (none) decodes with None.
        """

        class_version = 2

        at_ms: int
        node_id: str
        attempt: int
        lease_until_ms: int | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            """Version 1 had no lease: its claims are treated as having none (S19)."""
            state["lease_until_ms"] = None

        def apply(self, aggregate: ScheduledFunction) -> None:
            """Mark the attempt running on `node_id` (assign only)."""
            aggregate.state = JobState.IN_PROGRESS
            aggregate.node_id = self.node_id
            aggregate.started_at_ms = self.at_ms
            aggregate.attempt = self.attempt
            aggregate.lease_until_ms = self.lease_until_ms

    class Retried(Aggregate.Event):
        """An attempt hit a transient error; the job runs again at `next_run_ms` (S15)."""

        at_ms: int
        attempt: int
        error: str
        next_run_ms: int

        def apply(self, aggregate: ScheduledFunction) -> None:
            """Set the next attempt, due at `next_run_ms` (assign only)."""
            aggregate.attempt = self.attempt + 1
            aggregate.error = self.error
            aggregate.next_run_ms = self.next_run_ms

    class Canceled(Aggregate.Event):
        """The job was canceled (S20, S21)."""

        at_ms: int

        def apply(self, aggregate: ScheduledFunction) -> None:
            """Mark the job canceled as of `at_ms` (assign only)."""
            aggregate.state = JobState.CANCELED
            aggregate.completed_time_ms = self.at_ms

    class Completed(Aggregate.Event):
        """The job finished: `outcome` is `success` or `failed`, with the error if failed."""

        at_ms: int
        outcome: str
        error: str | None

        def apply(self, aggregate: ScheduledFunction) -> None:
            """Record the outcome; a canceled job stays canceled (assign only)."""
            aggregate.outcome = Outcome(self.outcome)
            if aggregate.state is JobState.CANCELED:
                return  # S21: the outcome is recorded for the audit; the state stays canceled
            aggregate.state = (
                JobState.SUCCESS if aggregate.outcome is Outcome.SUCCESS else JobState.FAILED
            )
            aggregate.completed_time_ms = self.at_ms
            aggregate.error = self.error

    @staticmethod
    def create_id(creation_time_ms: int) -> UUID:
        """Return a new job's id: a UUID of version 7 (RFC 9562) led by its creation time.

        Random ids (version 4) land on random pages of every index keyed by id (the log's and
        the view's), so a batch of N jobs wrote about N pages of each; ids in creation order
        are appended next to each other. The rest is 74 random bits, as unique as version 4's
        122 within one millisecond. The time is the job's own, from the injected clock (S3:
        the id still means nothing to callers).
        """
        rand = int.from_bytes(os.urandom(10))
        return JobId(
            (creation_time_ms & _MS_MASK) << 80
            | 0x7 << 76  # version 7
            | (rand >> 62 & 0xFFF) << 64
            | 0b10 << 62  # the RFC's variant
            | rand & _LOW_62
        )

    def __init__(  # noqa: PLR0913, PLR0917 - the fields of the Scheduled event
        self,
        name: str,
        kind: str,
        args: list[Any],
        kwargs: dict[str, Any],
        scheduled_time_ms: int,
        creation_time_ms: int,
        parent_id: str | None,
    ) -> None:
        self._job_id = str(self.id)  # read several times per run; str(UUID) costs ~1 us
        self.name = name
        self.kind = FunctionKind(kind)
        self.args = args
        self.kwargs = kwargs
        self.scheduled_time_ms = scheduled_time_ms
        self.creation_time_ms = creation_time_ms
        self.parent_id = parent_id
        self.state = JobState.PENDING
        self.attempt = 1
        self.next_run_ms = scheduled_time_ms
        self.node_id: str | None = None
        self.started_at_ms: int | None = None
        self.lease_until_ms: int | None = None
        self.completed_time_ms: int | None = None
        self.outcome: Outcome | None = None
        self.error: str | None = None

    @classmethod
    def schedule(  # noqa: PLR0913 - the fields of the Scheduled event
        cls,
        *,
        name: str,
        kind: FunctionKind,
        args: list[Any],
        kwargs: dict[str, Any],
        scheduled_time_ms: int,
        creation_time_ms: int,
        parent_id: str | None = None,
    ) -> ScheduledFunction:
        """Create a job; arguments and times must already be validated (`validation.py`).

        This is the library's `_create` for this class: the `Scheduled` event with a new id
        (`create_id`), version 1, the class's topic and the time now; the job it builds; the
        event pending on it. The library's generic steps (filtering the arguments for
        `create_id` by its signature, copying them, checking the id's type) cost ~5 us per
        job, a tenth of scheduling one in a batch; tests check both make the same job.
        """
        scheduled = cls.Scheduled
        event = scheduled(  # type: ignore[call-arg] # the library makes its events dataclasses
            originator_topic=get_topic(cls),
            originator_id=cls.create_id(creation_time_ms),
            originator_version=cls.INITIAL_VERSION,
            timestamp=scheduled.create_timestamp(),
            name=name,
            kind=kind.value,
            args=args,
            kwargs=kwargs,
            scheduled_time_ms=scheduled_time_ms,
            creation_time_ms=creation_time_ms,
            parent_id=parent_id,
        )
        job: ScheduledFunction = event.mutate(None)
        job.pending_events.append(event)
        return job

    @property
    def job_id(self) -> str:
        """The job's public id (S3)."""
        return self._job_id

    @property
    def is_terminal(self) -> bool:
        """Whether the job is in a final state (S1)."""
        return self.state in TERMINAL_STATES

    # Commands: check, then trigger the event.

    def start(self, node_id: str, at_ms: int, lease_until_ms: int | None = None) -> None:
        """Begin an attempt on `node_id` (the claim, S14 / S17)."""
        next_state(self.id, self.state, Command.START)
        self.trigger_event(
            self.Started,
            at_ms=at_ms,
            node_id=node_id,
            attempt=self.attempt,
            lease_until_ms=lease_until_ms,
        )

    def retry(self, *, at_ms: int, error: str, next_run_ms: int) -> None:
        """Record a transient failure of the current attempt; run again at `next_run_ms`."""
        next_state(self.id, self.state, Command.RETRY)
        self.trigger_event(
            self.Retried, at_ms=at_ms, attempt=self.attempt, error=error, next_run_ms=next_run_ms
        )

    def complete(self, outcome: Outcome, at_ms: int, error: str | None = None) -> None:
        """Record the outcome of the attempt in progress; a failure carries its error (S1)."""
        if outcome is Outcome.FAILED and not error:
            msg = f"job {self.job_id}: a failed outcome needs its error"
            raise ValueError(msg)
        next_state(
            self.id,
            self.state,
            Command.COMPLETE,
            outcome=outcome,
            started=self.started_at_ms is not None and self.outcome is None,
        )
        self.trigger_event(self.Completed, at_ms=at_ms, outcome=outcome.value, error=error)

    def cancel(self, at_ms: int) -> None:
        """Cancel a pending or running job (a finished one raises; callers skip those, S23)."""
        next_state(self.id, self.state, Command.CANCEL)
        self.trigger_event(self.Canceled, at_ms=at_ms)
