"""The `schedlog demo` application: an Account aggregate, a mutation and three actions (front door).

`run_demo` schedules one job of each outcome on the real clock, waits until all are terminal and
returns what the CLI prints; it prints nothing itself.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from schedlog.app import App
from schedlog.clock import SystemClock
from schedlog.errors import IdleTimeoutError
from schedlog.events.values import TERMINAL_STATES

if TYPE_CHECKING:
    from schedlog.context import ActionCtx, MutationCtx

__all__ = ["DEFAULT_DEMO_PATH", "Account", "DemoResult", "build_demo_app", "run_demo"]

DEFAULT_DEMO_PATH = Path("schedlog-demo.sqlite")
DEADLINE_S = 15.0
POLL_S = 0.05
EXPECTED_JOBS = 4
"""deposit, its receipt, the declined charge and the canceled reminder."""


class Account(Aggregate):
    """A bank account: the user's own eventsourcing aggregate, saved by the deposit mutation."""

    @event("Opened")
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0

    @event("Deposited")
    def deposit(self, cents: int) -> None:
        """Add `cents` to the balance."""
        self.balance += cents


def build_demo_app(store: str) -> App:
    """Return an App on `store` (real clock) with the demo's functions registered."""
    app = App(store=store, clock=SystemClock())

    @app.mutation(name="demo:deposit")
    def deposit(ctx: MutationCtx, account_id: str, cents: int) -> None:
        account: object = ctx.repository.get(UUID(account_id))
        assert isinstance(account, Account)  # noqa: S101 - the demo saved it
        account.deposit(cents)
        ctx.save(account)  # committed with the job's completion (S14)
        ctx.scheduler.run_after(400, "demo:send_receipt", account_id, account.balance)

    @app.action(name="demo:send_receipt")
    def send_receipt(ctx: ActionCtx, account_id: str, balance: int) -> None:
        del ctx, account_id, balance  # a real app would send an email here

    @app.action(name="demo:charge_card")
    def charge_card(ctx: ActionCtx, account_id: str, cents: int) -> None:
        del ctx, account_id
        raise RuntimeError(f"card declined: {cents} cents")

    @app.action(name="demo:send_reminder")
    def send_reminder(ctx: ActionCtx, account_id: str) -> None:
        del ctx, account_id  # canceled before it is due, so never runs

    return app


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What the demo did: the final view, the deposit's history and the account's balance."""

    store_url: str
    documents: list[dict[str, Any]]
    deposit_id: str
    deposit_history: list[dict[str, Any]]
    balance: int


def remove_store_files(path: Path) -> None:
    """Delete a SQLite file and its -wal/-shm companions, so the demo starts fresh."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def run_demo(path: Path = DEFAULT_DEMO_PATH, deadline_s: float = DEADLINE_S) -> DemoResult:
    """Run the demo on a fresh SQLite file at `path` and return its outcome.

    Raises:
        IdleTimeoutError: the jobs were not all terminal within `deadline_s`.

    """
    path = path.resolve()
    remove_store_files(path)
    app = build_demo_app(f"sqlite://{path}")
    try:
        account = Account("demo")
        app.save(account)
        account_id = str(account.id)
        with app:
            scheduler = app.scheduler
            deposit_id = scheduler.run_after(100, "demo:deposit", account_id, 250)
            scheduler.run_after(300, "demo:charge_card", account_id, 1_000)
            reminder_id = scheduler.run_after(1_500, "demo:send_reminder", account_id)
            scheduler.cancel(reminder_id)
            documents = _wait_until_terminal(app, deadline_s)
        final: object = app.repository.get(account.id)
        assert isinstance(final, Account)  # noqa: S101 - saved above
        return DemoResult(
            store_url=app.store_config.url,
            documents=documents,
            deposit_id=deposit_id,
            deposit_history=app.history(deposit_id),
            balance=final.balance,
        )
    finally:
        app.close()


def _wait_until_terminal(app: App, deadline_s: float) -> list[dict[str, Any]]:
    """Poll the view until every demo job (the deposit's child included) is terminal."""
    deadline = time.monotonic() + deadline_s
    pause = threading.Event()
    while True:
        documents = app.scheduled_functions.query(limit=100).items
        if len(documents) >= EXPECTED_JOBS and all(
            d["state"]["kind"] in TERMINAL_STATES for d in documents
        ):
            return documents
        if time.monotonic() > deadline:
            states = {d["name"]: d["state"]["kind"] for d in documents}
            raise IdleTimeoutError(f"demo jobs not finished within {deadline_s} s: {states}")
        pause.wait(POLL_S)
