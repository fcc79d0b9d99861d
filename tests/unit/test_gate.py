"""The runtime's slots: at most `max_concurrency` functions at once, first come first served (S13)."""

from __future__ import annotations

import threading

import pytest

from schedlog.actors.gate import RunGate


def _waiter(gate: RunGate, order: list[str], label: str) -> threading.Thread:
    def run() -> None:
        with gate.slot():
            order.append(label)

    thread = threading.Thread(target=run, name=f"waiter-{label}")
    thread.start()
    return thread


def _until_waiting(gate: RunGate, n: int) -> None:
    pause = threading.Event()
    for _ in range(30_000):
        if gate.waiting == n:
            return
        pause.wait(0.001)
    pytest.fail(f"{n} waiters never queued")


def test_permits_are_handed_out_and_counted() -> None:
    gate = RunGate(2)
    gate.acquire()
    gate.acquire()
    order: list[str] = []
    thread = _waiter(gate, order, "third")
    _until_waiting(gate, 1)
    assert order == []  # both permits held: the third waits
    gate.release()
    thread.join(timeout=30)
    assert order == ["third"]
    assert gate.waiting == 0


def test_a_released_permit_goes_to_the_longest_waiter_not_a_newcomer() -> None:
    gate = RunGate(1)
    gate.acquire()
    order: list[str] = []
    threads = []
    for k, label in enumerate(["first", "second", "third"], start=1):
        threads.append(_waiter(gate, order, label))
        _until_waiting(gate, k)
    gate.release()  # handed to "first"; nobody may take it in between
    for thread in threads:
        thread.join(timeout=30)
    assert order == ["first", "second", "third"]
    gate.acquire()  # every permit came back
    gate.release()


def test_a_gate_needs_a_permit() -> None:
    with pytest.raises(ValueError, match="at least one permit, got 0"):
        RunGate(0)
