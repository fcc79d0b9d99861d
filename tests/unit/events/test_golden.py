"""Every stored shape of every event keeps decoding, forever (style 3.3: versions and upcasters).

`golden/<event>.v<N>.json` holds a stored event of each version (its topic and its state as the
store keeps it). When an event changes shape, bump its `class_version`, add
`upcast_vN_vN+1`, and add a golden file of the new version; never edit or delete an old one.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    UUIDAsHex,
)

from schedlog.events import FunctionKind, Outcome, ScheduledFunction

GOLDEN = Path(__file__).parent / "golden"
JOB = uuid.UUID("6b2a5a5e-5d9f-4a61-8f0e-9a1a4a2d1c11")


def mapper() -> Mapper[uuid.UUID]:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DatetimeAsISO(), DecimalAsStr()):
        transcoder.register(transcoding)
    return Mapper(transcoder=transcoder)


def decode(name: str, version: int = 2) -> object:
    golden = json.loads((GOLDEN / name).read_text())
    stored = StoredEvent(
        originator_id=JOB,
        originator_version=version,
        topic=golden["topic"],
        state=json.dumps(golden["state"]).encode(),
    )
    return mapper().to_domain_event(stored)


def test_every_event_class_has_a_golden_file_of_its_current_version() -> None:
    for cls in (
        ScheduledFunction.Scheduled,
        ScheduledFunction.Started,
        ScheduledFunction.Retried,
        ScheduledFunction.Canceled,
        ScheduledFunction.Completed,
    ):
        version = getattr(cls, "class_version", 1)
        assert (GOLDEN / f"{cls.__name__.lower()}.v{version}.json").exists(), cls


def test_scheduled_v1_decodes() -> None:
    event = decode("scheduled.v1.json", version=1)
    assert isinstance(event, ScheduledFunction.Scheduled)
    assert event.name == "billing:charge"
    assert event.kind == "action"
    assert event.args == [
        "acc-1",
        250,
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
    ]
    assert event.kwargs == {"note": "x"}
    assert (event.scheduled_time_ms, event.creation_time_ms) == (1800000005000, 1800000000000)
    assert event.parent_id is None


def test_started_v2_decodes() -> None:
    event = decode("started.v2.json")
    assert isinstance(event, ScheduledFunction.Started)
    assert (event.at_ms, event.node_id, event.attempt) == (1800000005001, "host:1:abcdef", 1)
    assert event.lease_until_ms == 1800000035001


def test_started_v1_is_upcast_to_v2_with_no_lease() -> None:
    golden = json.loads((GOLDEN / "started.v1.json").read_text())
    assert "lease_until_ms" not in golden["state"]
    assert "class_version" not in golden["state"]  # version 1 is implicit
    event = decode("started.v1.json")
    assert isinstance(event, ScheduledFunction.Started)
    assert event.lease_until_ms is None
    assert event.node_id == "host:1:abcdef"


@pytest.mark.parametrize(
    ("name", "cls", "fields"),
    [
        ("canceled.v1.json", ScheduledFunction.Canceled, {"at_ms": 1800000005002}),
        (
            "completed.v1.json",
            ScheduledFunction.Completed,
            {"at_ms": 1800000005003, "outcome": "failed", "error": "ValueError: boom"},
        ),
        (
            "retried.v1.json",
            ScheduledFunction.Retried,
            {"at_ms": 2, "attempt": 1, "error": "version conflict", "next_run_ms": 100},
        ),
    ],
)
def test_other_events_v1_decode(name: str, cls: type, fields: dict[str, object]) -> None:
    event = decode(name)
    assert isinstance(event, cls)
    for key, value in fields.items():
        assert getattr(event, key) == value


def test_a_job_folded_from_golden_events_reaches_the_recorded_state() -> None:
    events = [
        decode("scheduled.v1.json", 1),
        decode("started.v1.json", 2),
        decode("canceled.v1.json", 3),
        decode("completed.v1.json", 4),
    ]
    job = None
    for event in events:
        job = event.mutate(job)  # type: ignore[attr-defined]
    assert isinstance(job, ScheduledFunction)
    assert job.state.value == "canceled"
    assert job.lease_until_ms is None


def _written(events: list[object]) -> dict[str, dict[str, object]]:
    """Return each event as the store would keep it: its topic and state, timestamp left out."""
    written = {}
    for event in events:
        stored = mapper().to_stored_event(event)  # type: ignore[arg-type]
        state = json.loads(stored.state)
        del state["timestamp"]  # the wall clock's, at write time
        written[stored.topic.rpartition(".")[2]] = state
    return written


def test_the_commands_write_the_golden_topics_and_fields() -> None:
    """What is written today reads back as the golden shape (S26: the log is the truth).

    The events were `@event` methods up to 2026-12-02 and are explicit classes with `apply`
    since; a change of topic or field here would strand every store already written.
    """
    job = ScheduledFunction.schedule(
        name="billing:charge",
        kind=FunctionKind.ACTION,
        args=[
            "acc-1",
            250,
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            dt.datetime(2027, 1, 1, tzinfo=dt.UTC),
        ],
        kwargs={"note": "x"},
        scheduled_time_ms=1800000005000,
        creation_time_ms=1800000000000,
    )
    job.start("host:1:abcdef", 1800000005001, 1800000035001)
    job.cancel(1800000005002)
    job.complete(Outcome.FAILED, 1800000005003, "ValueError: boom")
    retried = ScheduledFunction.schedule(
        name="billing:charge",
        kind=FunctionKind.MUTATION,
        args=[],
        kwargs={},
        scheduled_time_ms=1,
        creation_time_ms=1,
    )
    retried.retry(at_ms=2, error="version conflict", next_run_ms=100)
    written = _written([*job.collect_events(), *retried.collect_events()[1:]])
    for name in ("scheduled.v1", "started.v2", "canceled.v1", "completed.v1", "retried.v1"):
        golden = json.loads((GOLDEN / f"{name}.json").read_text())
        del golden["state"]["timestamp"]
        event = golden["topic"].rpartition(".")[2]
        assert written[event] == golden["state"], name
    assert written.keys() == {"Scheduled", "Started", "Canceled", "Completed", "Retried"}
