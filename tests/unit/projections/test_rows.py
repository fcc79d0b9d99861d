"""The pure projection: `change_for` per event, `apply_to_rows`, and the Convex document (S1-S3)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import orjson
import pytest
from eventsourcing.domain import Aggregate, event

from schedlog.events import FunctionKind, Outcome, ScheduledFunction
from schedlog.projections.rows import COLUMNS, Change, apply_to_rows, change_for, to_document

T0 = 1_800_000_000_000
DUE = T0 + 5_000


def _job(
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    kind: FunctionKind = FunctionKind.ACTION,
    parent_id: str | None = None,
) -> ScheduledFunction:
    return ScheduledFunction.schedule(
        name="billing.jobs:charge",
        kind=kind,
        args=["acc-1", 250] if args is None else args,
        kwargs={} if kwargs is None else kwargs,
        scheduled_time_ms=DUE,
        creation_time_ms=T0,
        parent_id=parent_id,
    )


def _fold(job: ScheduledFunction, first_seq: int = 1) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for seq, e in enumerate(job.collect_events(), start=first_seq):
        change = change_for(e, seq)
        assert change is not None
        apply_to_rows(rows, change)
    return rows


def _row(job: ScheduledFunction) -> dict[str, Any]:
    rows = _fold(job)
    assert list(rows) == [job.job_id]
    return rows[job.job_id]


# change_for, event by event


def test_s25_scheduled_inserts_a_full_pending_row() -> None:
    job = _job(kwargs={"cents": 1}, parent_id="parent-1")
    (scheduled,) = job.collect_events()
    change = change_for(scheduled, 42)
    assert change == Change(
        job_id=job.job_id,
        insert=True,
        guarded={},
        values={
            "id": job.job_id,
            "seq": 42,
            "creation_time": T0,
            "name": "billing.jobs:charge",
            "kind": "action",
            "args": orjson.dumps(["acc-1", 250]),
            "kwargs": orjson.dumps({"cents": 1}),
            "scheduled_time": DUE,
            "run_at": DUE,
            "completed_time": None,
            "state": "pending",
            "error": None,
            "parent_id": "parent-1",
            "attempt": 1,
            "node_id": None,
            "lease_until": None,
            "version": 1,
        },
    )
    assert set(change.values) == set(COLUMNS)


def test_s2_scheduled_without_kwargs_stores_none() -> None:
    (scheduled,) = _job().collect_events()
    change = change_for(scheduled, 1)
    assert change is not None
    assert change.values["kwargs"] is None


def test_started_sets_in_progress_node_and_attempt() -> None:
    job = _job()
    job.collect_events()
    job.start("node-a", at_ms=DUE + 1)
    (started,) = job.collect_events()
    change = change_for(started, 7)
    assert change == Change(
        job_id=job.job_id,
        values={
            "state": "inProgress",
            "node_id": "node-a",
            "attempt": 1,
            "lease_until": None,
            "version": 2,
        },
        guarded={},
        leaves="pending",  # the one state a start is allowed from: counts move without a read
    )


def test_s2_s15_retried_moves_run_at_and_attempt_never_scheduled_time() -> None:
    job = _job(kind=FunctionKind.MUTATION)
    job.collect_events()
    job.retry(at_ms=DUE + 3, error="conflict", next_run_ms=DUE + 90)
    (retried,) = job.collect_events()
    change = change_for(retried, 8)
    assert change == Change(
        job_id=job.job_id, values={"attempt": 2, "run_at": DUE + 90, "version": 2}, guarded={}
    )
    assert "scheduled_time" not in change.values
    assert "state" not in change.values  # S15: the view stays pending


def test_s20_canceled_sets_canceled_and_completed_time() -> None:
    job = _job()
    job.collect_events()
    job.cancel(at_ms=T0 + 1)
    (canceled,) = job.collect_events()
    assert change_for(canceled, 9) == Change(
        job_id=job.job_id,
        values={"state": "canceled", "completed_time": T0 + 1, "version": 2},
        guarded={},
    )  # no `leaves`: pending or running, the row is read to count it


@pytest.mark.parametrize(("outcome", "error"), [(Outcome.SUCCESS, None), (Outcome.FAILED, "e")])
def test_s21_completed_is_guarded_so_it_never_rewrites_a_terminal_row(
    outcome: Outcome, error: str | None
) -> None:
    job = _job()
    job.start("node-a", at_ms=DUE)
    job.collect_events()
    job.complete(outcome, at_ms=DUE + 3, error=error)
    (completed,) = job.collect_events()
    assert change_for(completed, 10) == Change(
        job_id=job.job_id,
        values={"version": 3},
        guarded={"state": outcome.value, "completed_time": DUE + 3, "error": error},
        leaves="inProgress",  # if the guard holds: the one unfinished state a completion leaves
    )


class _Account(Aggregate):
    @event("Debited")
    def debit(self, cents: int) -> None:
        self.cents = cents


def test_s25_events_of_other_aggregates_return_none() -> None:
    account = _Account()
    account.debit(5)
    created, debited = account.collect_events()
    assert change_for(created, 1) is None
    assert change_for(debited, 2) is None
    assert change_for(object(), 3) is None
    assert change_for(None, 4) is None


# apply_to_rows and to_document: the folded view


def test_s1_s2_s3_pending_document_has_exactly_the_convex_fields() -> None:
    job = _job()
    doc = to_document(_row(job))
    assert doc == {
        "_id": job.job_id,
        "_creationTime": float(T0),
        "name": "billing.jobs:charge",
        "args": ["acc-1", 250],
        "scheduledTime": float(DUE),
        "state": {"kind": "pending"},
    }
    assert type(doc["_creationTime"]) is float
    assert type(doc["scheduledTime"]) is float
    assert isinstance(doc["_id"], str)


def test_s2_kwargs_appear_only_when_given() -> None:
    doc = to_document(_row(_job(kwargs={"cents": 250, "memo": None})))
    assert doc["kwargs"] == {"cents": 250, "memo": None}
    assert "kwargs" not in to_document(_row(_job()))


def test_s1_in_progress_document_has_no_completed_time() -> None:
    job = _job()
    job.start("node-a", at_ms=DUE + 1)
    row = _row(job)
    assert row["state"] == "inProgress"
    assert row["node_id"] == "node-a"
    doc = to_document(row)
    assert doc["state"] == {"kind": "inProgress"}
    assert "completedTime" not in doc


def test_s1_success_document() -> None:
    job = _job()
    job.start("node-a", at_ms=DUE + 1)
    job.complete(Outcome.SUCCESS, at_ms=DUE + 3)
    doc = to_document(_row(job))
    assert doc["state"] == {"kind": "success"}
    assert doc["completedTime"] == float(DUE + 3)
    assert type(doc["completedTime"]) is float
    assert set(doc) == {
        "_id",
        "_creationTime",
        "name",
        "args",
        "scheduledTime",
        "completedTime",
        "state",
    }


def test_s1_failed_document_carries_the_error() -> None:
    job = _job()
    job.start("node-a", at_ms=DUE + 1)
    job.complete(Outcome.FAILED, at_ms=DUE + 3, error="ValueError: boom\nTraceback ...")
    doc = to_document(_row(job))
    assert doc["state"] == {"kind": "failed", "error": "ValueError: boom\nTraceback ..."}
    assert doc["completedTime"] == float(DUE + 3)


def test_s20_canceled_pending_document() -> None:
    job = _job()
    job.cancel(at_ms=T0 + 10)
    doc = to_document(_row(job))
    assert doc["state"] == {"kind": "canceled"}
    assert doc["completedTime"] == float(T0 + 10)


def test_s21_completion_after_cancel_changes_nothing_in_the_view() -> None:
    job = _job()
    job.start("node-a", at_ms=DUE + 1)
    job.cancel(at_ms=DUE + 2)
    job.complete(Outcome.FAILED, at_ms=DUE + 9, error="late")
    row = _row(job)
    assert row["state"] == "canceled"
    assert row["completed_time"] == DUE + 2
    assert row["error"] is None
    assert row["version"] == 4  # the row still tracks the aggregate's version
    doc = to_document(row)
    assert doc["state"] == {"kind": "canceled"}
    assert doc["completedTime"] == float(DUE + 2)


def test_s2_s15_retries_never_rewrite_scheduled_time() -> None:
    job = _job(kind=FunctionKind.MUTATION)
    job.retry(at_ms=DUE + 1, error="conflict", next_run_ms=DUE + 50)
    job.retry(at_ms=DUE + 51, error="conflict", next_run_ms=DUE + 250)
    row = _row(job)
    assert row["scheduled_time"] == DUE
    assert row["run_at"] == DUE + 250
    assert row["attempt"] == 3
    assert row["state"] == "pending"
    doc = to_document(row)
    assert doc["scheduledTime"] == float(DUE)
    assert doc["state"] == {"kind": "pending"}


def test_s14_mutation_goes_from_pending_straight_to_its_outcome() -> None:
    # Started and Completed of a mutation are saved together: folded, the row ends success.
    job = _job(kind=FunctionKind.MUTATION)
    job.retry(at_ms=DUE + 1, error="conflict", next_run_ms=DUE + 50)
    job.start("node-a", at_ms=DUE + 50)
    job.complete(Outcome.SUCCESS, at_ms=DUE + 52)
    row = _row(job)
    assert (row["state"], row["attempt"], row["completed_time"]) == ("success", 2, DUE + 52)


def test_s9_uuid_and_datetime_args_show_as_strings() -> None:
    an_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    when = dt.datetime(2027, 1, 1, 12, 30, tzinfo=dt.UTC)
    doc = to_document(_row(_job(args=[an_id, {"at": when, "ids": [an_id]}], kwargs={"w": when})))
    assert doc["args"] == [
        "12345678-1234-5678-1234-567812345678",
        {"at": "2027-01-01T12:30:00+00:00", "ids": ["12345678-1234-5678-1234-567812345678"]},
    ]
    assert doc["kwargs"] == {"w": "2027-01-01T12:30:00+00:00"}


def test_s26_seq_is_the_position_of_the_scheduled_event() -> None:
    job = _job()
    job.start("node-a", at_ms=DUE)
    rows = _fold(job, first_seq=100)
    assert rows[job.job_id]["seq"] == 100  # later events never move the job's order


def test_apply_to_rows_keeps_other_jobs_apart() -> None:
    a, b = _job(), _job()
    a.cancel(at_ms=T0 + 1)
    rows: dict[str, dict[str, Any]] = {}
    events = [*a.collect_events(), *b.collect_events()]
    for seq, e in enumerate(events, start=1):
        change = change_for(e, seq)
        assert change is not None
        apply_to_rows(rows, change)
    assert rows[a.job_id]["state"] == "canceled"
    assert rows[b.job_id]["state"] == "pending"


def test_apply_to_rows_copies_the_inserted_values() -> None:
    (scheduled,) = _job().collect_events()
    change = change_for(scheduled, 1)
    assert change is not None
    rows: dict[str, dict[str, Any]] = {}
    apply_to_rows(rows, change)
    rows[change.job_id]["state"] = "mangled"
    assert change.values["state"] == "pending"


def test_apply_to_rows_of_an_unknown_job_fails_loudly() -> None:
    job = _job()
    job.collect_events()
    job.cancel(at_ms=T0 + 1)
    (canceled,) = job.collect_events()
    change = change_for(canceled, 2)
    assert change is not None
    with pytest.raises(KeyError):
        apply_to_rows({}, change)
