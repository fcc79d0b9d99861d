"""The seams the runtime takes from the front door: clock, wake-up handle, job source (runtime)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from schedlog.projections.queries import DueJob

__all__ = ["Clock", "JobSource", "OwnThreadWaits", "Wakeup"]


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


@runtime_checkable
class OwnThreadWaits(Protocol):
    """What a clock may also offer: waiting on the caller's own thread (the wall clock does).

    An executor starting a job at its due time then wakes once, by itself, instead of being
    woken by the clock's thread (two wake-ups of the OS, each late by up to milliseconds on a
    loaded machine). A clock without it (a test's fake clock) is waited on with `wake_at`.
    """

    def wait_until(self, deadline_ms: int, interrupt: threading.Event) -> bool:
        """Block until `now_ms() >= deadline_ms` (True), or until `interrupt` is set (False)."""


class JobSource(Protocol):
    """Where the timer reads pending jobs and the log's position."""

    def due(self, before_ms: int, limit: int, after: tuple[int, int] | None = None) -> list[DueJob]:
        """Return up to `limit` pending jobs due before `before_ms`, in start order.

        With `after`, only jobs whose `(run_at, seq)` is greater (the next page of the index).
        """

    def log_position(self) -> int:
        """Return the id of the last event in the store's log."""

    def live_nodes(self, now_ms: int) -> list[str]:
        """Return the ids of the nodes whose heartbeat is fresh at `now_ms`."""

    def jobs_since(self, position: int) -> tuple[int, list[DueJob]]:
        """Return the log's events after `position` that make a job due, and the new position.

        Those are `Scheduled` and `Retried` events, from any process; one call reads a page.
        """
