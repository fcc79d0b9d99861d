"""A GroupCommit queue that tells waiting tests when a save joins it (unit and integration)."""

from __future__ import annotations

import threading

from schedlog.projections.group_commit import Save


class CountingQueue(list[Save]):
    """The GroupCommit's queue, telling the test each time a save joins it."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()

    def append(self, save: Save) -> None:
        with self.changed:
            super().append(save)
            self.changed.notify_all()
