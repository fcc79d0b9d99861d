"""An executor whose function outlasted a stop: the timer is gone, and nobody needs telling."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pykka

from schedlog.actors.batch import Batch
from schedlog.actors.executor import ExecutorActor
from schedlog.actors.messages import RunJob


class StoppedTimer:
    """A timer that has stopped: every message to it fails, as pykka's do for a dead actor."""

    def __init__(self) -> None:
        self.tried: list[object] = []

    def tell(self, message: object) -> None:
        self.tried.append(message)
        raise pykka.ActorDeadError("TimerActor not found")


class Runner:
    """Runs nothing: each job ends at once, its last save either done or under way."""

    def __init__(self, commit: Future[Any] | None = None) -> None:
        self.commit = commit

    def run(self, job_id: str, not_before: int) -> Future[Any] | None:
        del job_id, not_before
        return self.commit

    def run_batch(self, job_ids: tuple[str, ...]) -> Batch:
        return Batch(dict.fromkeys(job_ids), (), self.commit, job_ids if self.commit else ())


def _executor(runner: Runner, timer: StoppedTimer) -> ExecutorActor:
    return ExecutorActor(runner, timer)  # type: ignore[arg-type]  # not started: called in place


def test_a_job_that_ends_after_the_timer_stopped_is_no_error() -> None:
    timer = StoppedTimer()
    executor = _executor(Runner(), timer)
    assert executor.on_receive(RunJob(("job-1",), 0)) is None
    assert len(timer.tried) == 1  # it did try: the finished job went nowhere, quietly


def test_a_batch_and_a_commit_that_end_after_the_timer_stopped_are_no_error() -> None:
    timer = StoppedTimer()
    commit: Future[Any] = Future()
    executor = _executor(Runner(commit), timer)
    executor.on_receive(RunJob(("job-1", "job-2"), 0))  # a batch: finished, its commit under way
    executor.on_receive(RunJob(("job-3",), 0))  # one job: its slot is free, its commit under way
    commit.set_result({"job-1": None, "job-2": None})  # the commits end: the callbacks tell too
    assert len(timer.tried) == 4
