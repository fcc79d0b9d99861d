"""The pure event -> view-row function of `_scheduled_functions`, and its document (read side).

`change_for` is the one projection function: the live path applies it inside the events' own
transaction, and replay runs the log through it. It reads no state, so a change can be applied
to a SQL table (`view.py`) or to a dict of rows (`apply_to_rows`, used by tests and audits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from schedlog.events import JobState, ScheduledFunction

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["COLUMNS", "Change", "apply_to_rows", "change_for", "to_document"]

COLUMNS = (
    "id",
    "seq",
    "creation_time",
    "name",
    "kind",
    "args",
    "kwargs",
    "scheduled_time",
    "run_at",
    "completed_time",
    "state",
    "error",
    "parent_id",
    "attempt",
    "node_id",
    "lease_until",
    "version",
)
"""The columns of a view row; `run_at` is when the timer should next start the job, and
`lease_until` when a running action's claim runs out unless its node is alive (S19)."""

TERMINAL = tuple(s.value for s in (JobState.SUCCESS, JobState.FAILED, JobState.CANCELED))


@dataclass(frozen=True, slots=True)
class Change:
    """What one event does to its job's row.

    `insert` rows are new (`Scheduled`); otherwise `values` are set, and `guarded` values are
    set only while the row is not terminal (a completion after a cancel changes nothing, S21).
    """

    job_id: str
    values: Mapping[str, Any]
    guarded: Mapping[str, Any]
    insert: bool = False


def change_for(event: object, seq: int) -> Change | None:
    """Return the change `event` makes to the view; `seq` is its position in the log.

    Events of other aggregates return None.
    """
    match event:
        case ScheduledFunction.Scheduled():
            return Change(
                job_id=str(event.originator_id),
                insert=True,
                guarded={},
                values={
                    "id": str(event.originator_id),
                    "seq": seq,
                    "creation_time": event.creation_time_ms,
                    "name": event.name,
                    "kind": event.kind,
                    "args": orjson.dumps(event.args),
                    "kwargs": orjson.dumps(event.kwargs) if event.kwargs else None,
                    "scheduled_time": event.scheduled_time_ms,
                    "run_at": event.scheduled_time_ms,
                    "completed_time": None,
                    "state": JobState.PENDING.value,
                    "error": None,
                    "parent_id": event.parent_id,
                    "attempt": 1,
                    "node_id": None,
                    "lease_until": None,
                    "version": event.originator_version,
                },
            )
        case ScheduledFunction.Started():
            values: dict[str, Any] = {
                "state": JobState.IN_PROGRESS.value,
                "node_id": event.node_id,
                "attempt": event.attempt,
                "lease_until": event.lease_until_ms,
            }
            guarded: dict[str, Any] = {}
        case ScheduledFunction.Retried():
            values = {"attempt": event.attempt + 1, "run_at": event.next_run_ms}
            guarded = {}
        case ScheduledFunction.Canceled():
            values = {"state": JobState.CANCELED.value, "completed_time": event.at_ms}
            guarded = {}
        case ScheduledFunction.Completed():
            values = {}
            guarded = {
                "state": event.outcome,
                "completed_time": event.at_ms,
                "error": event.error,
            }
        case _:
            return None
    version = event.originator_version
    return Change(str(event.originator_id), {**values, "version": version}, guarded)


def apply_to_rows(rows: dict[str, dict[str, Any]], change: Change) -> None:
    """Apply `change` to an in-memory view (a dict of rows by id), as the SQL view does."""
    if change.insert:
        rows[change.job_id] = dict(change.values)
        return
    row = rows[change.job_id]
    row.update(change.values)
    if change.guarded and row["state"] not in TERMINAL:
        row.update(change.guarded)


def to_document(row: Mapping[str, Any]) -> dict[str, Any]:
    """Return the Convex `_scheduled_functions` document of a view row (S1-S3)."""
    doc: dict[str, Any] = {
        "_id": row["id"],
        "_creationTime": float(row["creation_time"]),
        "name": row["name"],
        "args": orjson.loads(row["args"]),
        "scheduledTime": float(row["scheduled_time"]),
    }
    if row["kwargs"] is not None:
        doc["kwargs"] = orjson.loads(row["kwargs"])
    state: dict[str, Any] = {"kind": row["state"]}
    if row["state"] in TERMINAL:
        doc["completedTime"] = float(row["completed_time"])
        if row["state"] == JobState.FAILED.value:
            state["error"] = row["error"]
    doc["state"] = state
    return doc
