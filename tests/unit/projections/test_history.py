"""`history_entries`: a job's events as dicts with type, time and data, oldest first (S29)."""

from __future__ import annotations

from schedlog.events import FunctionKind, Outcome, ScheduledFunction
from schedlog.projections.queries import history_entries


def test_s29_history_lists_every_event_with_type_time_and_data() -> None:
    job = ScheduledFunction.schedule(
        name="m:f",
        kind=FunctionKind.ACTION,
        args=[1],
        kwargs={"k": "v"},
        scheduled_time_ms=50,
        creation_time_ms=10,
    )
    job.start("node-a", at_ms=60)
    job.cancel(at_ms=70)
    job.complete(Outcome.FAILED, at_ms=80, error="late")
    assert history_entries(job.collect_events()) == [
        {
            "type": "Scheduled",
            "time": 10.0,
            "version": 1,
            "name": "m:f",
            "kind": "action",
            "args": [1],
            "kwargs": {"k": "v"},
            "scheduled_time_ms": 50,
            "parent_id": None,
        },
        {
            "type": "Started",
            "time": 60.0,
            "version": 2,
            "node_id": "node-a",
            "attempt": 1,
            "lease_until_ms": None,
        },
        {"type": "Canceled", "time": 70.0, "version": 3},
        {"type": "Completed", "time": 80.0, "version": 4, "outcome": "failed", "error": "late"},
    ]


def test_s29_history_of_a_retried_mutation_keeps_attempt_and_error() -> None:
    job = ScheduledFunction.schedule(
        name="m:f",
        kind=FunctionKind.MUTATION,
        args=[],
        kwargs={},
        scheduled_time_ms=50,
        creation_time_ms=10,
    )
    job.retry(at_ms=55, error="conflict", next_run_ms=90)
    _, retried = history_entries(job.collect_events())
    assert retried == {
        "type": "Retried",
        "time": 55.0,
        "version": 2,
        "attempt": 1,
        "error": "conflict",
        "next_run_ms": 90,
    }
    assert type(retried["time"]) is float


def test_s29_history_skips_what_is_not_an_event() -> None:
    assert history_entries([object(), "x"]) == []
