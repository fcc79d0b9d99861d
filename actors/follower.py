"""LogWatcher: follows the store's log so that jobs saved by other processes start on time (S11b).

The view is written in the same transaction as the events, so it needs no follower of its own;
what this process cannot know is when another process appended. A small daemon thread tells
the timer when the log moved: on PostgreSQL whenever the store says so (LISTEN/NOTIFY, which
every insert sends; one message at a time, since the timer reads to the log's end), on SQLite
by reading the log's last position every 50 ms (S11b asks 100 ms).

On PostgreSQL it also reads that position after every `CHECK_EVERY` waits that heard nothing
(1 s): a LISTEN connection that died without a word (a NAT's or firewall's idle timeout drops
it silently) heard nothing while the node went on beating, and jobs other processes scheduled
waited for the timer's own re-read, up to 30 s. When the log moved since the last look, the
timer is told (it reads on from where it is: one query if it had heard all); when it moved
twice in a row with nothing heard, the listening connection is opened again (then after 4, 8,
... such looks, up to `MAX_UNHEARD`: a listener that can never hear, behind PgBouncer's
transaction pooling say, is not reopened every few seconds). While notifications keep coming
nothing is read: the next one makes the timer read to the log's end, past any append whose
own NOTIFY was lost.

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
CHECK_EVERY = 20
"""PostgreSQL: waits for a notification that heard nothing (`POLL_S` each) between two reads
of the log's position, which find what a silent LISTEN connection missed (1 s)."""
MAX_UNHEARD = 64
"""The most looks in a row finding the log moved unheard before the listener is reopened."""


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
        relisten: Callable[[], None] | None = None,
    ) -> None:
        self._source = source
        self._timer = timer
        self._poll_s = poll_s
        # How to wait for a change: a plain sleep (SQLite), or until the store notifies one
        # (PostgreSQL's LISTEN), at most poll_s either way.
        self._wait = wait
        self._relisten = relisten  # drop the listening connection: the next wait opens another
        self._last_seen: int | None = None  # the log's position at the last look (PostgreSQL)
        self._unheard = 0  # looks in a row that found the log moved with nothing heard
        self._unheard_limit = 2  # how many reopen the listener (doubles with each reopening)
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
        heard = False  # a notification since the last look at the log's position
        waits = 0
        while not self._stopped.is_set():
            try:
                notified = wait(self._poll_s)
            except Exception as error:
                failing.failed(error)
                self._stopped.wait(self._poll_s * failing.pause())
                notified = True  # look anyway: a notification may have been lost meanwhile
            else:
                failing.ok()
            heard = heard or notified
            waits += not notified  # under a stream of notifications, no reads at all
            if waits >= CHECK_EVERY:
                waits = 0
                if self._moved(heard):
                    notified = True  # the timer reads from where it is: a miss costs 1 s
                heard = False
            if not notified or (handled is not None and not handled.is_set()):
                continue
            handled = threading.Event()
            if not self._tell(LogAdvanced(None, handled)):
                return

    def _moved(self, heard: bool) -> bool:  # noqa: FBT001
        """Look at the log's position: whether it moved since the last look.

        The timer is then told whatever was heard (a notification heard in the interval says
        nothing of an append after it whose NOTIFY was lost). A move with nothing heard makes
        the listener suspect: the second such look in a row opens it again (one may be a
        commit whose NOTIFY was on its way as the position was read), and each reopening
        doubles the looks the next one takes. A position that cannot be read is left for the
        next look (the waits report the store's errors).
        """
        try:
            position = self._source.log_position()
        except Exception:
            log.debug("cannot read the log position", exc_info=True)
            return False
        before, self._last_seen = self._last_seen, position
        if before is None or position == before:
            self._unheard = 0
            return False
        if heard:
            self._unheard = 0
            return True
        self._unheard += 1
        if self._unheard >= self._unheard_limit and self._relisten is not None:
            log.warning(
                "the log moved %d times in a row with no notification: listening again",
                self._unheard,
            )
            self._relisten()
            self._unheard = 0
            self._unheard_limit = min(self._unheard_limit * 2, MAX_UNHEARD)
        return True

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
