"""The ScheduledFunction aggregate: commands append the right events, and replay rebuilds it."""

from __future__ import annotations

import copy
import pickle
import uuid
from typing import Any

import pytest
from eventsourcing.application import project_aggregate
from eventsourcing.domain import CanInitAggregate, OriginatorVersionError

from schedlog.events import (
    FunctionKind,
    InvalidTransitionError,
    JobId,
    JobState,
    Outcome,
    ScheduledFunction,
)

SF = ScheduledFunction


def _job(**overrides: Any) -> ScheduledFunction:
    fields: dict[str, Any] = {
        "name": "billing.jobs:charge",
        "kind": FunctionKind.MUTATION,
        "args": ["acc-1", 250],
        "kwargs": {"note": "x"},
        "scheduled_time_ms": 1_005_000,
        "creation_time_ms": 1_000_000,
        "parent_id": None,
    }
    fields.update(overrides)
    return ScheduledFunction.schedule(**fields)


def _rebuild(events: list[Any]) -> ScheduledFunction:
    """Fold events the way eventsourcing's repository does: created event first, then the rest."""
    aggregate = None
    for e in events:
        aggregate = e.mutate(aggregate)
    assert isinstance(aggregate, ScheduledFunction)
    return aggregate


def _state(job: ScheduledFunction) -> dict[str, Any]:
    return {k: v for k, v in vars(job).items() if k != "_pending_events"}


# Commands -> events and state


def test_s2_schedule_appends_scheduled_with_every_field() -> None:
    job = _job(kind=FunctionKind.ACTION, parent_id="parent-1")
    (scheduled,) = job.collect_events()
    assert type(scheduled) is SF.Scheduled
    assert scheduled.originator_id == job.id
    assert scheduled.originator_version == 1
    assert scheduled.name == "billing.jobs:charge"
    assert scheduled.kind == "action"
    assert type(scheduled.kind) is str  # payloads are plain data (style 3.3)
    assert scheduled.args == ["acc-1", 250]
    assert scheduled.kwargs == {"note": "x"}
    assert scheduled.scheduled_time_ms == 1_005_000
    assert scheduled.creation_time_ms == 1_000_000
    assert scheduled.parent_id == "parent-1"


def test_s3_a_new_jobs_id_is_a_version_7_uuid_led_by_its_creation_time() -> None:
    """Ids in creation order sit next to each other in every index keyed by id.

    The time is the job's `creation_time_ms` (the injected clock's), not read by the domain; 74
    bits are random, so jobs made in the same millisecond still differ.
    """
    same_ms = [_job(creation_time_ms=1_800_000_000_000) for _ in range(1_000)]
    later = _job(creation_time_ms=1_800_000_000_001)
    ids = [job.id for job in same_ms]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in [*ids, later.id])
    assert {i.int >> 80 for i in ids} == {1_800_000_000_000}
    assert later.id.int >> 80 == 1_800_000_000_001
    assert len(set(ids)) == len(ids)
    random_bits = {(i.int >> 64 & 0xFFF) << 62 | i.int & ((1 << 62) - 1) for i in ids}
    assert len(random_bits) == len(ids)
    assert all(i < later.id for i in ids)
    assert _job(creation_time_ms=1_000).job_id < _job(creation_time_ms=2_000).job_id


def test_s1_a_new_job_is_pending_attempt_one() -> None:
    job = _job()
    assert job.state is JobState.PENDING
    assert job.kind is FunctionKind.MUTATION
    assert job.attempt == 1
    assert job.next_run_ms == 1_005_000
    assert job.completed_time_ms is None
    assert job.started_at_ms is None
    assert job.outcome is None
    assert job.error is None
    assert job.node_id is None
    assert not job.is_terminal
    assert job.version == 1


def test_s3_job_id_is_the_string_of_a_fresh_uuid() -> None:
    a, b = _job(), _job()
    assert a.job_id == str(a.id)
    assert isinstance(a.id, uuid.UUID)
    assert a.job_id != b.job_id


def test_s3_a_new_jobs_id_keeps_its_text_and_is_a_plain_uuid_to_everyone_else() -> None:
    job = _job()
    plain = uuid.UUID(str(job.id))
    assert str(job.id) == str(plain) == job.job_id
    assert (str(job.id), job.id.hex, job.id.int) == (str(plain), plain.hex, plain.int)
    assert job.id == plain
    assert hash(job.id) == hash(plain)
    assert {job.id: 1}[plain] == 1
    pickled = pickle.loads(pickle.dumps(job.id))  # noqa: S301 - our own bytes
    for copied in (pickled, copy.copy(job.id), copy.deepcopy(job.id)):
        assert type(copied) is uuid.UUID
        assert copied == plain
        assert str(copied) == job.job_id
    with pytest.raises(TypeError, match="immutable"):
        job.id.int = 0  # type: ignore[misc]


def test_s25_the_scheduled_event_builds_the_job_as_the_librarys_mutate_does() -> None:
    """`Scheduled.mutate` passes the fields straight to `__init__`; the library's generic
    `mutate` (topic resolved, fields filtered by signature) builds the very same job."""
    (scheduled,) = _job(args=[uuid.UUID(int=7), {"k": [1.5]}], parent_id="p").collect_events()
    ours = scheduled.mutate(None)
    theirs = CanInitAggregate.mutate(scheduled, None)
    assert type(ours) is type(theirs) is ScheduledFunction
    assert vars(ours) == vars(theirs)
    assert ours.version == 1
    assert ours.created_on == ours.modified_on == scheduled.timestamp
    assert ours.collect_events() == []  # the library's `_create` appends the event, not mutate


def test_s25_schedule_makes_the_job_and_event_the_librarys_create_makes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`schedule` builds its event itself; the library's `_create`, given the same id and
    time, makes an equal event and job, the event pending on it alike."""
    job_id = ScheduledFunction.create_id(1_000_000)

    def same_id(creation_time_ms: int) -> uuid.UUID:
        assert creation_time_ms == 1_000_000  # both paths give create_id the job's time
        return job_id

    monkeypatch.setattr(ScheduledFunction, "create_id", staticmethod(same_id))
    fields: dict[str, Any] = {
        "name": "billing.jobs:charge",
        "kind": FunctionKind.ACTION.value,
        "args": ["acc-1", {"n": [250]}],
        "kwargs": {"note": "x"},
        "scheduled_time_ms": 1_005_000,
        "creation_time_ms": 1_000_000,
        "parent_id": "parent-1",
    }
    ours = _job(**{**fields, "kind": FunctionKind.ACTION})
    (ours_event,) = ours.pending_events
    theirs = ScheduledFunction._create(  # the library's path, for comparison
        SF.Scheduled, timestamp=ours_event.timestamp, **fields
    )
    (theirs_event,) = theirs.pending_events
    assert type(ours_event) is type(theirs_event) is SF.Scheduled
    assert ours_event == theirs_event
    assert ours_event.originator_topic == theirs_event.originator_topic
    assert _state(ours) == _state(theirs)
    assert ours.id == job_id
    assert ours.version == 1


def test_s3_a_job_ids_text_is_the_uuids_text() -> None:
    """`JobId` formats its text itself; it is `UUID`'s, for ids of every shape."""
    for value in (0, 1, (1 << 128) - 1, 0x0123456789ABCDEF0FEDCBA987654321):
        assert str(JobId(value)) == str(uuid.UUID(int=value))
    for _ in range(100):
        job_id = ScheduledFunction.create_id(1_000_000)
        assert str(job_id) == str(uuid.UUID(int=job_id.int))


def test_start_appends_started_with_node_time_and_attempt() -> None:
    job = _job()
    job.collect_events()
    job.start("node-a", at_ms=1_005_001)
    (started,) = job.collect_events()
    assert type(started) is SF.Started
    assert (started.at_ms, started.node_id, started.attempt) == (1_005_001, "node-a", 1)
    assert started.originator_version == 2
    assert job.state is JobState.IN_PROGRESS
    assert job.node_id == "node-a"
    assert job.started_at_ms == 1_005_001


def test_s15_retry_appends_retried_and_the_next_start_counts_the_attempt() -> None:
    job = _job()
    job.collect_events()
    job.retry(at_ms=1_005_010, error="version conflict", next_run_ms=1_005_090)
    (retried,) = job.collect_events()
    assert type(retried) is SF.Retried
    assert (retried.at_ms, retried.attempt, retried.error, retried.next_run_ms) == (
        1_005_010,
        1,
        "version conflict",
        1_005_090,
    )
    assert job.state is JobState.PENDING
    assert job.attempt == 2
    assert job.next_run_ms == 1_005_090
    assert job.scheduled_time_ms == 1_005_000  # S2
    job.start("node-b", at_ms=1_005_090)
    (started,) = job.collect_events()
    assert started.attempt == 2


def test_s20_cancel_appends_canceled() -> None:
    job = _job()
    job.collect_events()
    job.cancel(at_ms=1_001_000)
    (canceled,) = job.collect_events()
    assert type(canceled) is SF.Canceled
    assert canceled.at_ms == 1_001_000
    assert job.state is JobState.CANCELED
    assert job.completed_time_ms == 1_001_000
    assert job.is_terminal


def test_s14_complete_success() -> None:
    job = _job()
    job.start("node-a", at_ms=1_005_001)
    job.complete(Outcome.SUCCESS, at_ms=1_005_004)
    *_, completed = job.collect_events()
    assert type(completed) is SF.Completed
    assert (completed.at_ms, completed.outcome, completed.error) == (1_005_004, "success", None)
    assert type(completed.outcome) is str
    assert job.state is JobState.SUCCESS
    assert job.outcome is Outcome.SUCCESS
    assert job.completed_time_ms == 1_005_004
    assert job.is_terminal


def test_s16_complete_failed_keeps_the_error() -> None:
    job = _job()
    job.start("node-a", at_ms=1_005_001)
    job.complete(Outcome.FAILED, at_ms=1_005_004, error="ValueError: boom\nTraceback …")
    *_, completed = job.collect_events()
    assert (completed.outcome, completed.error) == ("failed", "ValueError: boom\nTraceback …")
    assert job.state is JobState.FAILED
    assert job.error == "ValueError: boom\nTraceback …"


def test_s15_success_after_a_retry_clears_the_retry_error() -> None:
    job = _job()
    job.retry(at_ms=1, error="conflict", next_run_ms=2)
    job.start("node-a", at_ms=2)
    job.complete(Outcome.SUCCESS, at_ms=3)
    assert job.error is None


def test_s21_completion_after_cancel_appends_completed_but_keeps_canceled() -> None:
    job = _job(kind=FunctionKind.ACTION)
    job.start("node-a", at_ms=10)
    job.cancel(at_ms=20)
    job.complete(Outcome.FAILED, at_ms=30, error="late")
    events = job.collect_events()
    assert [type(e) for e in events] == [SF.Scheduled, SF.Started, SF.Canceled, SF.Completed]
    assert events[-1].outcome == "failed"
    assert job.state is JobState.CANCELED
    assert job.completed_time_ms == 20
    assert job.error is None


def test_s25_versions_are_consecutive() -> None:
    job = _job()
    job.retry(at_ms=1, error="e", next_run_ms=2)
    job.start("n", at_ms=2)
    job.complete(Outcome.SUCCESS, at_ms=3)
    assert [e.originator_version for e in job.collect_events()] == [1, 2, 3, 4]
    assert job.version == 4


# A failed command appends nothing and changes nothing


def _finished() -> ScheduledFunction:
    job = _job()
    job.start("node-a", at_ms=1)
    job.complete(Outcome.SUCCESS, at_ms=2)
    return job


def _canceled() -> ScheduledFunction:
    job = _job()
    job.cancel(at_ms=1)
    return job


def _running() -> ScheduledFunction:
    job = _job()
    job.start("node-a", at_ms=1)
    return job


@pytest.mark.parametrize(
    ("make", "command"),
    [
        pytest.param(_finished, lambda j: j.start("node-b", at_ms=9), id="finished-start"),
        pytest.param(_finished, lambda j: j.cancel(at_ms=9), id="finished-cancel"),
        pytest.param(
            _finished,
            lambda j: j.retry(at_ms=9, error="e", next_run_ms=10),
            id="finished-retry",
        ),
        pytest.param(
            _finished,
            lambda j: j.complete(Outcome.FAILED, at_ms=9, error="e"),
            id="finished-complete",
        ),
        pytest.param(_canceled, lambda j: j.start("node-b", at_ms=9), id="canceled-start"),
        pytest.param(_canceled, lambda j: j.cancel(at_ms=9), id="canceled-cancel"),
        pytest.param(
            _canceled,
            lambda j: j.retry(at_ms=9, error="e", next_run_ms=10),
            id="canceled-retry",
        ),
        pytest.param(
            _canceled,
            lambda j: j.complete(Outcome.SUCCESS, at_ms=9),
            id="canceled-never-started-complete",
        ),
        pytest.param(_running, lambda j: j.start("node-b", at_ms=9), id="running-start"),
        pytest.param(
            _running,
            lambda j: j.retry(at_ms=9, error="e", next_run_ms=10),
            id="running-retry",
        ),
        pytest.param(_job, lambda j: j.complete(Outcome.SUCCESS, at_ms=9), id="pending-complete"),
    ],
)
def test_s1_a_refused_command_appends_no_event(make: Any, command: Any) -> None:
    job = make()
    pending = len(job.collect_events())
    before = _state(job)
    with pytest.raises(InvalidTransitionError):
        command(job)
    assert job.collect_events() == []
    assert _state(job) == before
    assert job.version == pending


# Replay: the log rebuilds the same aggregate


HISTORIES = {
    "scheduled": lambda _: None,
    "started": lambda j: j.start("n", at_ms=2),
    "retried-twice-then-success": lambda j: (
        j.retry(at_ms=2, error="c1", next_run_ms=3),
        j.retry(at_ms=3, error="c2", next_run_ms=5),
        j.start("n", at_ms=5),
        j.complete(Outcome.SUCCESS, at_ms=6),
    ),
    "failed": lambda j: (j.start("n", at_ms=2), j.complete(Outcome.FAILED, at_ms=3, error="e")),
    "canceled-pending": lambda j: j.cancel(at_ms=2),
    "retried-then-canceled": lambda j: (
        j.retry(at_ms=2, error="c1", next_run_ms=3),
        j.cancel(at_ms=2),
    ),
    "canceled-running-then-completed": lambda j: (
        j.start("n", at_ms=2),
        j.cancel(at_ms=3),
        j.complete(Outcome.SUCCESS, at_ms=4),
    ),
}


@pytest.mark.parametrize("history", sorted(HISTORIES))
def test_s25_replaying_the_events_rebuilds_the_same_aggregate(history: str) -> None:
    job = _job(args=[uuid.UUID(int=7), {"k": [1, 2.5, None]}], parent_id="p")
    HISTORIES[history](job)
    events = list(job.collect_events())
    rebuilt = _rebuild(events)
    assert rebuilt == job  # eventsourcing compares the whole __dict__
    assert _state(rebuilt) == _state(job)
    assert rebuilt.state is job.state
    assert rebuilt.collect_events() == []


@pytest.mark.parametrize("history", sorted(HISTORIES))
def test_s25_the_repository_projector_rebuilds_the_same_aggregate(history: str) -> None:
    job = _job()
    HISTORIES[history](job)
    events = list(job.collect_events())
    rebuilt = project_aggregate(None, events)
    assert rebuilt == job
    # and from a part-way state, the remaining events bring it to the same place
    if len(events) > 1:
        partial = project_aggregate(None, events[:1])
        assert project_aggregate(partial, events[1:]) == job


def test_s25_replay_does_not_revalidate() -> None:
    # Mutators only assign: a Completed on a canceled job replays without InvalidTransitionError.
    job = _job(kind=FunctionKind.ACTION)
    job.start("n", at_ms=2)
    job.cancel(at_ms=3)
    job.complete(Outcome.SUCCESS, at_ms=4)
    rebuilt = _rebuild(list(job.collect_events()))
    assert rebuilt.state is JobState.CANCELED
    assert rebuilt.outcome is Outcome.SUCCESS


def test_s25_replay_rejects_events_out_of_order() -> None:
    job = _job()
    job.start("n", at_ms=2)
    job.complete(Outcome.SUCCESS, at_ms=3)
    scheduled, started, completed = job.collect_events()
    rebuilt = scheduled.mutate(None)
    with pytest.raises(OriginatorVersionError):
        completed.mutate(rebuilt)
    assert started.mutate(rebuilt).state is JobState.IN_PROGRESS
