"""RunGate: at most `max_concurrency` functions run at once, started first come, first served.

A runtime has more executors than slots (`timer.AHEAD`): the extra ones take jobs coming due
while every slot holds one, so that their read and claim happen ahead of their due time, as
they would on an idle slot. Each function then runs only once it holds one of the gate's
permits (S13). A released permit goes straight to the longest waiter (no newcomer overtakes
it): jobs reach the gate in due order, and start in it.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["RunGate"]


class RunGate:
    """`permits` slots, handed out in the order they were asked for."""

    def __init__(self, permits: int) -> None:
        if permits < 1:
            msg = f"a gate needs at least one permit, got {permits}"
            raise ValueError(msg)
        self._free = permits
        self._lock = threading.Lock()
        self._waiters: collections.deque[threading.Lock] = collections.deque()

    def acquire(self) -> None:
        """Take a permit, waiting behind those who asked first."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        turn.acquire()  # released by `release`, which hands its permit over

    def release(self) -> None:
        """Give a permit back: to the longest waiter, if any."""
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._free += 1

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a permit for the `with` block."""
        self.acquire()
        try:
            yield
        finally:
            self.release()

    @property
    def waiting(self) -> int:
        """How many wait for a permit now."""
        return len(self._waiters)
