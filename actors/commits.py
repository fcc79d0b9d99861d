"""CommitPool: threads that run jobs' final saves while the executors go on (runtime)."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CommitPool"]

T = TypeVar("T")


class CommitPool:
    """Threads that save jobs' final commits, so an executor's slot runs the next job meanwhile.

    Commits submitted together meet in the store's group commit: one transaction, one fsync.
    At most one commit per thread is in flight: `submit` waits for a free one, so a slow disk
    holds the executors back instead of piling up finished work that a crash would lose (a
    mutation whose commit never landed runs again; an action's outcome is reported cut off).
    The threads are daemons, like the actors' (an App still running at exit is stopped first).
    """

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._workers: list[threading.Thread] = []
        self._in_flight = 0
        self._idle = threading.Condition()

    def start(self) -> None:
        """Start the threads (again, after a stop)."""
        self._workers = [
            threading.Thread(target=self._work, name=f"schedlog-commit-{i}", daemon=True)
            for i in range(self._threads)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, commit: Callable[[], T]) -> Future[T]:
        """Run `commit` on a commit thread; the future holds what it returns (or raised)."""
        future: Future[T] = Future()
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight < self._threads)
            self._in_flight += 1
        self._queue.put((commit, future))
        return future

    def stop(self, timeout_s: float) -> bool:
        """Let the commits submitted so far finish (within `timeout_s`); False if some did not."""
        with self._idle:
            done = self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)
        for _ in self._workers:
            self._queue.put(None)
        self._workers = []
        return done

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            commit, future = item
            try:
                future.set_result(commit())
            except BaseException as error:
                future.set_exception(error)
            finally:
                with self._idle:
                    self._in_flight -= 1
                    self._idle.notify_all()
