"""The App the crash tests run in worker processes (`schedlog run tests.process.crashapp:app`).

Mutations deposit into `Account` aggregates (recording their job id, so a double apply shows)
and schedule a child action; actions append their job id to a side-effect file outside the
store. Each function prints `started <id>` (and actions `completed <id>`) so the test can pick
its moment to SIGKILL by reading lines, never by sleeping.
"""

from __future__ import annotations

import os
import random
import sys
import threading
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from schedlog import ActionCtx, App, MutationCtx

TRANSFER = "crash:transfer"
EFFECT = "crash:effect"
SLOW = "crash:slow"
DELIBERATE = "deliberate failure"


class Account(Aggregate):
    """A user aggregate that mutations change; `applied` lists the jobs that changed it."""

    @event("Opened")
    def __init__(self, name: str) -> None:
        self.name = name
        self.balance = 0
        self.applied: list[str] = []

    @event("Deposited")
    def deposit(self, cents: int, job_id: str) -> None:
        self.balance += cents
        self.applied.append(job_id)


def say(line: str) -> None:
    """Print one whole line in one write: print() writes the newline apart, so lines from
    several threads could run together."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def build_app(store: str, effects: str, lease_ms: int) -> App:
    """Return the crash-test App on `store`, writing action side effects to `effects`."""
    app = App(store=store, lease_ms=lease_ms, max_concurrency=4)

    @app.mutation(name=TRANSFER)
    def transfer(ctx: MutationCtx, account_id: str, cents: int, children: int) -> None:
        say(f"started {ctx.job_id}")
        if cents < 0:
            raise ValueError(DELIBERATE)
        account = ctx.repository.get(UUID(account_id))
        account.deposit(cents, ctx.job_id)
        ctx.save(account)
        for i in range(children):
            ctx.scheduler.run_after(i * 5, EFFECT, f"{ctx.job_id}/{i}")

    @app.action(name=EFFECT)
    def effect(ctx: ActionCtx, token: str) -> None:
        say(f"started {ctx.job_id}")
        fd = os.open(effects, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{ctx.job_id}\n".encode())
        finally:
            os.close(fd)
        threading.Event().wait(random.uniform(0, 0.02))
        if token.endswith("!"):
            raise RuntimeError(DELIBERATE)
        say(f"completed {ctx.job_id}")

    @app.action(name=SLOW)
    def slow(ctx: ActionCtx, ms: int) -> None:
        say(f"started {ctx.job_id}")
        threading.Event().wait(ms / 1000)
        say(f"completed {ctx.job_id}")

    return app


def __getattr__(name: str) -> App:
    """Build `app` on first access, from the worker's environment (keeps imports harmless)."""
    if name != "app":
        raise AttributeError(name)
    app = build_app(
        os.environ["SCHEDLOG_STORE"],
        os.environ["CRASH_EFFECTS"],
        int(os.environ.get("CRASH_LEASE_MS", "1000")),
    )
    globals()["app"] = app
    return app
