"""The Clock protocol and SystemClock, the one place schedlog reads the real time (front door)."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING

from schedlog.actors.ports import Clock, Wakeup

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Clock", "SystemClock", "Wakeup"]

log = logging.getLogger(__name__)


class _Entry:
    __slots__ = ("callback", "canceled", "cond", "deadline_ms")

    def __init__(
        self, deadline_ms: int, callback: Callable[[], None], cond: threading.Condition
    ) -> None:
        self.deadline_ms = deadline_ms
        self.callback: Callable[[], None] | None = callback
        self.canceled = False
        self.cond = cond

    def cancel(self) -> None:
        self.canceled = True
        self.callback = None
        with self.cond:  # the waker drops it now, and ends if nothing else is left
            self.cond.notify()


IDLE_EXIT_S = 1.0
"""How long `SystemClock`'s waker thread stays with nothing to wake before it ends (a closed
App's clock left one thread for good; 15 Apps opened and closed, 15 threads)."""


class SystemClock:
    """The wall clock; one daemon thread fires every wake-up from a heap (no thread per timer).

    The waker re-reads `now_ms()` after each wait, so a wall clock that moved back only delays
    a wake-up, never fires it early.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, _Entry]] = []
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def now_ms(self) -> int:
        """Return the wall-clock time in epoch milliseconds."""
        return time.time_ns() // 1_000_000

    def wait_until(self, deadline_ms: int, interrupt: threading.Event) -> bool:
        """Block the caller until `deadline_ms` (True), or until `interrupt` is set (False).

        A timed wait on the caller's own thread (`OwnThreadWaits`): it wakes once, at the
        deadline to the microsecond, rather than being woken by the waker thread's callback.
        """
        while (remaining_s := deadline_ms / 1000 - time.time()) > 0:
            if interrupt.wait(remaining_s):
                return False
        return True

    def wake_at(self, deadline_ms: int, callback: Callable[[], None]) -> Wakeup:
        """Call `callback` from the waker thread once `now_ms() >= deadline_ms`."""
        entry = _Entry(deadline_ms, callback, self._cond)
        with self._cond:
            heapq.heappush(self._heap, (deadline_ms, next(self._counter), entry))
            if self._thread is None:
                waker = threading.Thread(target=self._run, name="schedlog-clock", daemon=True)
                waker.start()  # kept only once started: a failed start is tried again next time
                self._thread = waker
            self._cond.notify()
        return entry

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][2].canceled:
                    if self._heap:
                        heapq.heappop(self._heap)
                        continue
                    if not self._cond.wait(IDLE_EXIT_S) and not self._heap:
                        self._thread = None  # nothing to wake: `wake_at` starts another
                        return
                remaining_ns = self._heap[0][0] * 1_000_000 - time.time_ns()
                if remaining_ns > 0:
                    self._cond.wait(remaining_ns / 1e9)
                    continue
                entry = heapq.heappop(self._heap)[2]
            callback = entry.callback
            entry.callback = None
            if callback is not None:
                try:
                    callback()
                except Exception:
                    log.exception("a clock callback raised")
