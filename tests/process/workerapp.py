"""The App a `schedlog run workerapp:app` worker runs in tests/process (store: $SCHEDLOG_STORE).

Imported only by the worker subprocess (its cwd is this folder); the test process registers
stand-ins under the same names to schedule jobs, as a web process would.
"""

from __future__ import annotations

from pathlib import Path

from eventsourcing.domain import Aggregate, event

from schedlog import ActionCtx, App, MutationCtx

RECORD = "workerapp:record"
WRITE_MARKER = "workerapp:write_marker"


class Marker(Aggregate):
    """What the mutation writes: one aggregate per call, carrying its label."""

    @event("Created")
    def __init__(self, label: str) -> None:
        self.label = label


app = App()  # the store comes from $SCHEDLOG_STORE, which `schedlog --store` sets


@app.mutation(name=RECORD)
def record(ctx: MutationCtx, label: str) -> None:
    ctx.save(Marker(label))


@app.action(name=WRITE_MARKER)
def write_marker(ctx: ActionCtx, path: str, text: str) -> None:
    Path(path).write_text(f"{text} job={ctx.job_id}", encoding="utf-8")
