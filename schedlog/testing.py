"""FakeClock and helpers, public so users can test their own scheduled functions (front door)."""

from __future__ import annotations

import heapq
import itertools
import threading
from typing import TYPE_CHECKING

from schedlog.errors import ConfigurationError
from schedlog.events.validation import is_plain_int

if TYPE_CHECKING:
    from collections.abc import Callable

    from schedlog.actors.ports import Wakeup

__all__ = ["FakeClock"]


class _FakeWakeup:
    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        self.callback = None


class FakeClock:
    """A clock that moves only when told: `advance(ms)` and `set(at_ms)` fire due wake-ups in order.

    Each wake-up fires with the clock at its own deadline, one after another, as trio's `jump`.
    Wake-ups asked for at or before the current time fire at once, in the caller's thread.

    The runtime's timer handles a wake-up on its own thread, after `advance` has returned, so
    it reads the clock where `advance` left it: after `advance(100)` a job due at +10 records
    `Started` at +100. To see each job start at its own due time, advance to each due time in
    turn and call `app.wait_until_idle()` in between.
    """

    def __init__(self, now_ms: int = 1_800_000_000_000) -> None:
        self._now = _whole_ms("now_ms", now_ms)
        self._heap: list[tuple[int, int, _FakeWakeup]] = []
        self._counter = itertools.count()
        self._lock = threading.RLock()

    def now_ms(self) -> int:
        """Return the fake time in epoch milliseconds."""
        with self._lock:
            return self._now

    def wake_at(self, deadline_ms: int, callback: Callable[[], None]) -> Wakeup:
        """Fire `callback` when the clock is moved to `deadline_ms` (at once if it is there)."""
        wakeup = _FakeWakeup(callback)
        with self._lock:
            due_now = deadline_ms <= self._now
            if not due_now:
                heapq.heappush(self._heap, (deadline_ms, next(self._counter), wakeup))
        if due_now:
            wakeup.callback = None
            callback()
        return wakeup

    def advance(self, ms: int) -> None:
        """Move time forward by `ms` milliseconds, firing each wake-up at its deadline."""
        if _whole_ms("ms", ms) < 0:
            msg = f"FakeClock cannot go back: advance({ms})"
            raise ConfigurationError(msg)
        self.set(self.now_ms() + ms)

    def set(self, at_ms: int) -> None:
        """Move time forward to `at_ms`, firing each wake-up at its deadline."""
        _whole_ms("at_ms", at_ms)
        while True:
            with self._lock:
                if at_ms < self._now:
                    msg = f"FakeClock cannot go back from {self._now} to {at_ms}"
                    raise ConfigurationError(msg)
                if not self._heap or self._heap[0][0] > at_ms:
                    self._now = at_ms
                    return
                deadline, _, wakeup = heapq.heappop(self._heap)
                self._now = max(self._now, deadline)
                callback = wakeup.callback
                wakeup.callback = None
            if callback is not None:
                callback()


def _whole_ms(label: str, value: object) -> int:
    """Return `value` if it is a whole number of ms (an int), else refuse it, naming it.

    Times are whole milliseconds everywhere (ids, events, the view): a float slipped in
    failed later, in the first `run_after`, with an error about `&`.
    """
    if not is_plain_int(value):
        msg = f"FakeClock takes whole milliseconds (an int) for {label}, got {value!r}"
        raise ConfigurationError(msg)
    return value
