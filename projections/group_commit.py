"""Group commit: concurrent saves share one transaction and one fsync (write side).

A save that finds no commit in flight leads at once: it commits its own events alone, so one
caller pays nothing extra. Saves that arrive while a commit is in flight queue up; when the
commit ends, the first of them leads the next one for all of them. Each save keeps its own
atomicity and its own errors: the recorder applies each in a savepoint, so a conflicting save
rolls back alone (its caller gets the `IntegrityError`) while the others in the group commit.
If the transaction as a whole fails, every save in it gets that error; none was kept.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from eventsourcing.persistence import StoredEvent

__all__ = ["GroupCommit", "Save"]


@dataclass(slots=True, eq=False)
class Save:
    """One caller's `insert_events`: its events, and what became of them."""

    events: Sequence[StoredEvent]
    kwargs: dict[str, Any]
    ids: Sequence[int] | None = None
    error: BaseException | None = None
    lead: bool = False
    done: threading.Event | None = None
    """Set when the save is done or handed the lead; only a save that waits has one."""


class GroupCommit:
    """Leader/follower queue in front of a recorder's transaction.

    `commit(saves)` must write every save in one transaction, setting each save's `ids` or, for
    a save rolled back alone, its `error`; it raises if the transaction itself fails.
    """

    def __init__(self, commit: Callable[[list[Save]], None]) -> None:
        self._commit = commit
        self._lock = threading.Lock()
        self._queue: list[Save] = []
        self._busy = False

    def insert(self, events: Sequence[StoredEvent], kwargs: dict[str, Any]) -> Sequence[int] | None:
        """Write `events` in the next group's transaction; return their ids or raise its error."""
        save = Save(events, kwargs)
        with self._lock:
            self._queue.append(save)
            if not self._busy:
                self._busy = save.lead = True
            else:
                save.done = threading.Event()
        if save.done is not None:
            save.done.wait()
        if save.lead:  # first in, or handed the lead by the group before
            self._lead()
        if save.error is not None:
            raise save.error
        return save.ids

    def _lead(self) -> None:
        with self._lock:
            group = self._queue[:]
            self._queue.clear()
        try:
            self._commit(group)
        except BaseException as error:
            for save in group:
                save.ids = None
                save.error = _own_copy(error)
        finally:
            with self._lock:
                if self._queue:
                    nxt = self._queue[0]  # queued while busy: it waits on its `done`
                    nxt.lead = True
                    if nxt.done is not None:
                        nxt.done.set()
                else:
                    self._busy = False
            for save in group:
                if save.done is not None:
                    save.done.set()


def _own_copy(error: BaseException) -> BaseException:
    """Return a copy of `error` for one caller to raise (and traceback) on its own thread."""
    try:
        mine = copy.copy(error)
    except Exception:
        return error
    mine.__cause__ = error
    return mine
