"""LogWatcher: follows the store's log so that jobs saved by other processes start on time (S11b).

The view is written in the same transaction as the events, so it needs no follower of its own;
what this process cannot know is when another process appended. A small daemon thread reads the
log's last position whenever the store says it changed (PostgreSQL: LISTEN/NOTIFY, which every
insert sends) or every 25 ms (SQLite), and tells the timer when it moved (S11b asks 100 ms).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import pykka

from schedlog.actors.messages import LogAdvanced

if TYPE_CHECKING:
    from collections.abc import Callable

    from schedlog.actors.timer import JobSource

__all__ = ["LogWatcher"]

log = logging.getLogger(__name__)

POLL_S = 0.025


class LogWatcher:
    """A daemon thread that tells the timer `LogAdvanced` whenever the log's position changes.

    The timer then reads the new events itself, so the thread never decodes anything.
    """

    def __init__(
        self,
        source: JobSource,
        timer: pykka.ActorRef[Any],
        poll_s: float = POLL_S,
        wait: Callable[[float], object] | None = None,
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
        last = -1
        while not self._stopped.is_set():
            if self._wait is None:
                self._stopped.wait(self._poll_s)
            else:
                try:
                    self._wait(self._poll_s)
                except Exception:
                    log.warning("log watcher: cannot wait for notifications", exc_info=True)
                    self._stopped.wait(self._poll_s)
            try:
                position = self._source.log_position()
            except Exception:
                log.exception("log watcher: cannot read the log position")
                continue
            if position != last:
                last = position
                try:
                    self._timer.tell(LogAdvanced(position))
                except pykka.ActorDeadError:
                    return
