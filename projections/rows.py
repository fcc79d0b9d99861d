"""The pure event -> view-row function of `_scheduled_functions`, and its document (read side).

`change_of` is the one projection function: the live path applies it, through `change_for`, to
domain events inside their own transaction, and replay runs the log's stored fields through it
without building domain events. It reads no state, so a change can be applied to a SQL table
(`view.py`) or to a dict of rows (`apply_to_rows`, used by replay, tests and audits).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from schedlog.events import JobState, ScheduledFunction

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "COLUMNS",
    "PROJECTED",
    "Change",
    "apply_to_rows",
    "change_for",
    "change_of",
    "event_time_of",
    "state_after",
    "to_document",
]

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
    `leaves` is the state the change moves the row out of, where the event alone tells (a
    start leaves pending; a completion, if its guard holds, leaves inProgress); the counts by
    state move by it without reading the row.
    """

    job_id: str
    values: Mapping[str, Any]
    guarded: Mapping[str, Any]
    insert: bool = False
    leaves: str | None = None


_F = ScheduledFunction
PROJECTED: tuple[type, ...] = (_F.Scheduled, _F.Started, _F.Retried, _F.Canceled, _F.Completed)
"""The job events the view folds; every other event (the user's aggregates) changes nothing."""
_PROJECTED_SET = frozenset(PROJECTED)


def change_for(event: object, seq: int) -> Change | None:
    """Return the change `event` makes to the view; `seq` is its position in the log.

    Events of other aggregates return None.
    """
    kind: type | None = type(event)
    if kind not in _PROJECTED_SET:
        kind = next((k for k in PROJECTED if isinstance(event, k)), None)  # a subclass
        if kind is None:
            return None
    e: Any = event
    return change_of(kind, str(e.originator_id), e.originator_version, vars(e), seq)


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)  # orjson's own check let the job be scheduled


def _view_json(value: object) -> bytes:
    """Encode arguments for the view (S9: a datetime as its ISO text).

    `isoformat`, not orjson's own: orjson rounds a UTC offset to whole minutes, which moved
    an instant with an offset of seconds (Europe/Amsterdam before 1937: +00:19:32).
    """
    return orjson.dumps(value, default=_iso, option=orjson.OPT_PASSTHROUGH_DATETIME)


def change_of(
    kind: type, job_id: str, version: int, fields: Mapping[str, Any], seq: int
) -> Change | None:
    """Return the change an event of class `kind` makes to the view, from its fields.

    `fields` are the event's attributes (a domain event's `vars`, or its stored JSON once
    upcast, see `replay.py`), `job_id` the job's id as text and `version` the event's
    `originator_version`. Classes not in `PROJECTED` return None.
    """
    if kind is _F.Scheduled:
        return Change(
            job_id=job_id,
            insert=True,
            guarded={},
            values={
                "id": job_id,
                "seq": seq,
                "creation_time": fields["creation_time_ms"],
                "name": fields["name"],
                "kind": fields["kind"],
                "args": _view_json(fields["args"]),
                "kwargs": _view_json(fields["kwargs"]) if fields["kwargs"] else None,
                "scheduled_time": fields["scheduled_time_ms"],
                "run_at": fields["scheduled_time_ms"],
                "completed_time": None,
                "state": JobState.PENDING.value,
                "error": None,
                "parent_id": fields["parent_id"],
                "attempt": 1,
                "node_id": None,
                "lease_until": None,
                "version": version,
            },
        )
    guarded: dict[str, Any] = {}
    leaves = None
    if kind is _F.Started:
        leaves = JobState.PENDING.value
        values: dict[str, Any] = {
            "state": JobState.IN_PROGRESS.value,
            "node_id": fields["node_id"],
            "attempt": fields["attempt"],
            "lease_until": fields["lease_until_ms"],
        }
    elif kind is _F.Retried:
        values = {"attempt": fields["attempt"] + 1, "run_at": fields["next_run_ms"]}
    elif kind is _F.Canceled:
        values = {"state": JobState.CANCELED.value, "completed_time": fields["at_ms"]}
    elif kind is _F.Completed:
        leaves = JobState.IN_PROGRESS.value
        values = {}
        guarded = {
            "state": fields["outcome"],
            "completed_time": fields["at_ms"],
            "error": fields["error"],
        }
    else:
        return None
    values["version"] = version
    return Change(job_id, values, guarded, leaves=leaves)


def merge_changes(changes: Sequence[Change]) -> list[Change]:
    """Merge consecutive changes of one job into one, where the result is certain.

    A save's events of one job (a mutation's `Started` and `Completed`, a job scheduled and
    canceled at once) then cost one statement. A row inserted and changed folds into the insert;
    two updates merge when the first fixes the state the second's guard depends on.
    """
    merged: list[Change] = []
    for change in changes:
        last = merged[-1] if merged else None
        if last is None or last.job_id != change.job_id or change.insert:
            merged.append(change)
        elif last.insert:
            row = dict(last.values)
            apply_to_rows({change.job_id: row}, change)
            merged[-1] = Change(change.job_id, row, {}, insert=True)
        elif not last.guarded and "state" in last.values:
            values = {**last.values, **change.values}
            if values["state"] not in TERMINAL:  # the guard, as the row would then stand
                values.update(change.guarded)
            merged[-1] = Change(change.job_id, values, {}, leaves=last.leaves)
        else:
            merged.append(change)
    return merged


def event_time_of(kind: type, fields: Mapping[str, Any]) -> int | None:
    """Return when an event happened (ms, by the App's clock), from its class and fields."""
    at = fields.get("creation_time_ms" if kind is _F.Scheduled else "at_ms")
    return at if isinstance(at, int) else None


def apply_to_rows(rows: dict[str, dict[str, Any]], change: Change) -> None:
    """Apply `change` to an in-memory view (a dict of rows by id), as the SQL view does."""
    if change.insert:
        rows[change.job_id] = dict(change.values)
        return
    row = rows[change.job_id]
    row.update(change.values)
    if change.guarded and row["state"] not in TERMINAL:
        row.update(change.guarded)


def state_after(state: str | None, change: Change) -> str | None:
    """Return a row's state after `change`, from its state before (None: there is no row)."""
    if change.insert:
        return str(change.values["state"])
    if state is None:
        return None  # nothing to update
    state = change.values.get("state", state)
    if "state" in change.guarded and state not in TERMINAL:
        state = change.guarded["state"]
    return state


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
