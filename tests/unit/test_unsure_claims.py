"""Claims whose commit answer was lost: recognised as this node's, and never forgotten too soon."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from schedlog.actors.runner import JobRunner
from schedlog.events import FunctionKind, ScheduledFunction
from schedlog.testing import FakeClock

T0 = 1_800_000_000_000


def _claimed(node: str, at: int) -> ScheduledFunction:
    job = ScheduledFunction.schedule(
        name="io:send",
        kind=FunctionKind.ACTION,
        args=[],
        kwargs={},
        scheduled_time_ms=T0,
        creation_time_ms=T0,
        parent_id=None,
    )
    job.start(node, at, at + 30_000)
    return job


def test_a_recovery_pass_keeps_a_newer_claim_made_while_it_read() -> None:
    """Two lost answers in a row: the pass read the job claimed the second time and, taking it
    for someone else's, dropped the entry of that second claim: the action stayed in progress
    for as long as its node lived."""
    first = _claimed("node-a", T0)
    second = _claimed("node-a", T0 + 5)  # as the store holds it: the second claim landed
    runner: JobRunner

    def load_job(job_id: str) -> ScheduledFunction:
        del job_id
        runner.unsure.entries[second.job_id] = (second.version, second.started_at_ms)  # meanwhile
        return second

    host: Any = SimpleNamespace(clock=FakeClock(T0), node_id="node-a", load_job=load_job)
    runner = JobRunner(host)
    runner.unsure.entries[second.job_id] = (first.version, first.started_at_ms)
    assert runner.unsure.landed(load_job) == []  # the copy it read is not what the store holds
    assert runner.unsure.entries == {second.job_id: (second.version, second.started_at_ms)}
    assert runner.unsure.take(second)  # so the retry still runs it
    assert not runner.unsure.take(second)  # once


def test_a_recovery_pass_stops_at_the_first_read_that_fails() -> None:
    reads: list[str] = []

    def load_job(job_id: str) -> ScheduledFunction:
        reads.append(job_id)
        raise OSError("server closed the connection unexpectedly")

    host: Any = SimpleNamespace(clock=FakeClock(T0), node_id="node-a", load_job=load_job)
    runner = JobRunner(host)
    for n in range(50):
        runner.unsure.entries[f"job-{n}"] = (2, T0)
    assert runner.unsure.landed(load_job) == []
    assert len(reads) == 1  # not 50 reads of a store that is out, before the next heartbeat
    assert len(runner.unsure.entries) == 50
