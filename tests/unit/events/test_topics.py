"""The five event topics are storage keys: pinned exactly, and resolvable back to their class."""

from __future__ import annotations

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic, resolve_topic

from schedlog.events import FunctionKind, ScheduledFunction

TOPICS = {
    "Scheduled": "schedlog.events.function:ScheduledFunction.Scheduled",
    "Started": "schedlog.events.function:ScheduledFunction.Started",
    "Retried": "schedlog.events.function:ScheduledFunction.Retried",
    "Canceled": "schedlog.events.function:ScheduledFunction.Canceled",
    "Completed": "schedlog.events.function:ScheduledFunction.Completed",
}

AGGREGATE_TOPIC = "schedlog.events.function:ScheduledFunction"


def _own_event_classes() -> dict[str, type]:
    """The event classes nested in ScheduledFunction, minus the bases eventsourcing generates."""
    generated = {name for name, value in vars(Aggregate).items() if isinstance(value, type)}
    return {
        name: value
        for name, value in vars(ScheduledFunction).items()
        if isinstance(value, type)
        and issubclass(value, ScheduledFunction.Event)
        and name not in generated
    }


@pytest.mark.parametrize(("name", "topic"), sorted(TOPICS.items()))
def test_s25_event_topic_is_pinned(name: str, topic: str) -> None:
    cls = getattr(ScheduledFunction, name)
    assert get_topic(cls) == topic
    assert resolve_topic(topic) is cls


def test_s25_aggregate_topic_is_pinned() -> None:
    # The Scheduled event stores it as `originator_topic`; moving the class breaks replay.
    assert get_topic(ScheduledFunction) == AGGREGATE_TOPIC
    assert resolve_topic(AGGREGATE_TOPIC) is ScheduledFunction


def test_s25_aggregate_has_exactly_the_five_events_of_its_own() -> None:
    own = _own_event_classes()
    assert set(own) == set(TOPICS)
    assert {get_topic(cls) for cls in own.values()} == set(TOPICS.values())


def test_s25_the_own_event_classes_are_real_events_not_base_classes() -> None:
    own = _own_event_classes()
    assert ScheduledFunction.Event not in own.values()
    assert issubclass(own["Scheduled"], Aggregate.Created)
    for name in ("Started", "Retried", "Canceled", "Completed"):
        assert not issubclass(own[name], Aggregate.Created), name


def test_s25_a_new_job_records_the_scheduled_topic() -> None:
    job = ScheduledFunction.schedule(
        name="m:f",
        kind=FunctionKind.MUTATION,
        args=[],
        kwargs={},
        scheduled_time_ms=1,
        creation_time_ms=1,
    )
    (created,) = job.collect_events()
    assert get_topic(type(created)) == TOPICS["Scheduled"]
    assert created.originator_topic == AGGREGATE_TOPIC
