"""Helpers for integration tests: a user aggregate and small readers of the log and view."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from schedlog import App
from schedlog.projections.rows import apply_to_rows, change_for
from schedlog.projections.schema import TABLE


class Account(Aggregate):
    """A user aggregate that mutations change."""

    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0

    @event("Deposited")
    def deposit(self, cents: int) -> None:
        self.balance += cents


def state(app: App, job_id: str) -> str:
    doc = app.scheduled_functions.get(job_id)
    assert doc is not None, job_id
    return doc["state"]["kind"]


def types(app: App, job_id: str) -> list[str]:
    return [e["type"] for e in app.history(job_id)]


def log_position(app: App) -> int:
    return app.store.recorder.max_notification_id() or 0


def balance(app: App, account_id: UUID) -> int:
    account: Any = app.repository.get(account_id)
    return int(account.balance)


def all_docs(app: App) -> list[dict[str, Any]]:
    return app.scheduled_functions.query(limit=1000).items


def view_table(app: App) -> dict[str, dict[str, Any]]:
    """Return the raw rows of the live view, by id, on either backend."""
    with app.store.db.transaction(commit=False) as c:
        c.execute(f"SELECT * FROM {TABLE}")
        rows = c.fetchall()
    return {
        r["id"]: {k: bytes(v) if isinstance(v, memoryview) else v for k, v in dict(r).items()}
        for r in rows
    }


def fold_of_log(app: App) -> dict[str, dict[str, Any]]:
    """Return the view's rows as folding the whole log gives them (S26: the view must match)."""
    rows: dict[str, dict[str, Any]] = {}
    mapper = app.store.mapper
    for n in app.store.recorder.select_notifications(start=1, limit=10_000):
        change = change_for(mapper.to_domain_event(n), n.id)
        if change is not None:
            apply_to_rows(rows, change)
    return rows


def execute(app: App, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
    """Run one statement on the store's database (either backend) and return its rows."""
    with app.store.db.transaction(commit=True) as c:
        c.execute(sql, params)
        return c.fetchall() if sql.lstrip().upper().startswith("SELECT") else []
