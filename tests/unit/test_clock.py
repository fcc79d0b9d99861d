"""SystemClock waits on the caller's thread; the runner uses that where the clock offers it."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from schedlog import SystemClock
from schedlog.actors.ports import OwnThreadWaits
from schedlog.actors.runner import JobRunner
from schedlog.testing import FakeClock


def test_the_wall_clock_waits_on_the_callers_thread_and_a_fake_one_does_not() -> None:
    assert isinstance(SystemClock(), OwnThreadWaits)
    assert not isinstance(FakeClock(), OwnThreadWaits)  # tests move its time by hand


def test_system_clock_wait_until_a_past_deadline_returns_true_at_once() -> None:
    clock = SystemClock()
    assert clock.wait_until(clock.now_ms() - 1, threading.Event()) is True


def test_system_clock_wait_until_returns_false_when_interrupted() -> None:
    clock = SystemClock()
    interrupt = threading.Event()
    interrupt.set()
    assert clock.wait_until(clock.now_ms() + 3_600_000, interrupt) is False


class _OwnWaitClock(FakeClock):
    """A fake clock that also waits on the caller's thread: it jumps to the deadline."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[tuple[int, threading.Event]] = []

    def wait_until(self, deadline_ms: int, interrupt: threading.Event) -> bool:
        self.waits.append((deadline_ms, interrupt))
        self.set(deadline_ms)
        return True


def test_the_runner_waits_on_its_own_thread_when_the_clock_can() -> None:
    clock = _OwnWaitClock()
    host: Any = SimpleNamespace(clock=clock)
    runner = JobRunner(host)
    deadline = clock.now_ms() + 250
    assert runner._wait_until(deadline) is True
    assert clock.waits == [(deadline, runner.closing)]  # closing interrupts the wait
    assert clock.now_ms() == deadline


def test_the_runner_waits_for_a_fake_clocks_wake_up_otherwise() -> None:
    clock = FakeClock()
    host: Any = SimpleNamespace(clock=clock)
    runner = JobRunner(host)
    deadline = clock.now_ms() + 250
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(runner._wait_until(deadline)))
    waiter.start()
    clock.advance(249)
    assert result == []  # the clock is not there yet: it cannot have returned
    clock.advance(1)
    waiter.join(5)
    assert result == [True]


def test_the_wall_clock_s_waker_thread_ends_when_nothing_is_left_to_wake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each App's clock kept its thread for good (15 Apps opened and closed: 15 threads)."""
    import schedlog.clock as clock_module

    monkeypatch.setattr(clock_module, "IDLE_EXIT_S", 0.0)
    clock = clock_module.SystemClock()
    for _ in range(2):  # and a later wake-up starts another one
        fired, seen = threading.Event(), threading.Event()

        def on_wake(fired: threading.Event = fired, seen: threading.Event = seen) -> None:
            fired.set()
            assert seen.wait(5)  # the waker cannot end before the test has looked at it

        clock.wake_at(clock.now_ms(), on_wake)
        waker = clock._thread
        seen.set()
        assert waker is not None
        assert fired.wait(5)
        waker.join(5)
        assert not waker.is_alive()
        assert clock._thread is None
    far = clock.wake_at(clock.now_ms() + 3_600_000, lambda: None)  # an hour away
    waker = clock._thread
    assert waker is not None
    far.cancel()  # a closed App cancels its wake-ups: the waker ends now, not in an hour
    waker.join(5)
    assert not waker.is_alive()
