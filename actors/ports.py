"""The seams the runtime takes from the front door: the clock, and a wake-up handle (runtime)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Clock", "Wakeup"]


class Wakeup(Protocol):
    """A pending `Clock.wake_at` call; `cancel` makes it not fire."""

    def cancel(self) -> None:
        """Do not fire this wake-up (no-op if it already fired)."""


class Clock(Protocol):
    """Where the runtime reads time and asks to be woken. Injected, so tests move time by hand."""

    def now_ms(self) -> int:
        """Return the time as Unix epoch milliseconds (UTC)."""

    def wake_at(self, deadline_ms: int, callback: Callable[[], None]) -> Wakeup:
        """Call `callback` (which must not block) once the clock reaches `deadline_ms`."""
