"""LogWatcher: follows the store's log so that jobs saved by other processes start on time (S11b).

The view is written in the same transaction as the events, so it needs no follower of its own;
what this process cannot know is when another process appended. A small daemon thread tells
the timer when the log moved: on PostgreSQL whenever the store says so (LISTEN/NOTIFY, which
every insert sends; one message at a time, since the timer reads to the log's end), on SQLite
by reading the log's last position every 50 ms (S11b asks 100 ms).

Why 50 ms and not less: a worker draining jobs that another process keeps scheduling takes
the jobs that came in since the last look as one batch, whose claims and outcomes share
commits; every look also costs the scheduling process a share of SQLite's one write lock.
Measured (W2(a): 10,000 actions scheduled one call at a time while a worker runs, three
interleaved pairs on 2026-12-02): 1,124-1,203 jobs/s at 25 ms, 1,234-1,334 at 50 ms; 75 ms
was no better.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import pykka

from schedlog.actors.messages import LogAdvanced

if TYPE_CHECKING:
    from collections.abc import Callable

    from schedlog.actors.ports import JobSource

__all__ = ["LogWatcher"]

log = logging.getLogger(__name__)

POLL_S = 0.05


class LogWatcher:
    """A daemon thread that tells the timer `LogAdvanced` whenever the log's position changes.

    The timer then reads the new events itself, so the thread never decodes anything.
    """

    def __init__(
        self,
        source: JobSource,
        timer: pykka.ActorRef[Any],
        poll_s: float = POLL_S,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self._source = source
        self._timer = timer
        self._poll_s = poll_s
        # How to wait for a change: a plain sleep (SQLite), or until the store notifies one
        # (PostgreSQL's LISTEN), at most poll_s either way.
        self._wait = wait
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="schedlog-log-watcher", daemon=True)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and wait for the thread."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        if self._wait is None:
            self._poll()
        else:
            self._listen(self._wait)

    def _poll(self) -> None:
        """SQLite: read the log's position every poll_s; tell the timer when it moved."""
        last = -1
        failing = _Failing("cannot read the log position")
        while not self._stopped.wait(self._poll_s * failing.pause()):
            try:
                position = self._source.log_position()
            except Exception as error:
                failing.failed(error)
                continue
            failing.ok()
            if position != last:
                last = position
                if not self._tell(LogAdvanced(position)):
                    return

    def _listen(self, wait: Callable[[float], bool]) -> None:
        """PostgreSQL: tell the timer of each NOTIFY, unless it has not read the last one yet.

        The timer reads the log up to its end when it handles the message, so notifications
        that arrive before it starts are covered by that read: one message stands for them all.
        """
        handled: threading.Event | None = None
        failing = _Failing("cannot wait for notifications")
        while not self._stopped.is_set():
            try:
                notified = wait(self._poll_s)
            except Exception as error:
                failing.failed(error)
                self._stopped.wait(self._poll_s * failing.pause())
                notified = True  # look anyway: a notification may have been lost meanwhile
            else:
                failing.ok()
            if not notified or (handled is not None and not handled.is_set()):
                continue
            handled = threading.Event()
            if not self._tell(LogAdvanced(None, handled)):
                return

    def _tell(self, message: LogAdvanced) -> bool:
        try:
            self._timer.tell(message)
        except pykka.ActorDeadError:
            return False
        return True


class _Failing:
    """How a watcher logs and waits out the store's errors while it is down.

    The first error with its traceback, then one line every `REPORT_EVERY` failures, and a
    pause that doubles up to `MAX_PAUSE` polls (1 s at 50 ms); a success says the store is back
    and resets both. (A PostgreSQL outage of 3 s logged 66 tracebacks, one every 50 ms.)
    """

    REPORT_EVERY = 100
    MAX_PAUSE = 20

    def __init__(self, what: str) -> None:
        self._what = what
        self._failures = 0

    def failed(self, error: BaseException) -> None:
        self._failures += 1
        if self._failures == 1:
            log.warning("log watcher: %s", self._what, exc_info=error)
        elif self._failures % self.REPORT_EVERY == 0:
            log.warning("log watcher: %s (%d times so far): %s", self._what, self._failures, error)

    def ok(self) -> None:
        if self._failures:
            log.warning("log watcher: the store is back after %d failures", self._failures)
        self._failures = 0

    def pause(self) -> int:
        """Return how many polls to wait before the next try (1 while all is well)."""
        return min(2 ** min(self._failures, 5), self.MAX_PAUSE) if self._failures else 1
