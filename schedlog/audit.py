"""Audit and read-side upkeep of the App: replay, views as of an instant, retention, stats."""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

from schedlog.errors import ConfigurationError, JobNotFoundError
from schedlog.events.validation import is_plain_int
from schedlog.projections.decode import JobEventDecoder
from schedlog.projections.queries import job_key
from schedlog.projections.replay import AsOfView, build_as_of, prune, rebuild
from schedlog.projections.schema import TABLE

if TYPE_CHECKING:
    from collections.abc import Callable

    from schedlog.actors.ports import Clock
    from schedlog.projections.queries import ScheduledFunctions, Stats
    from schedlog.store import JobStore

__all__ = ["DEFAULT_RETENTION_MS", "Audit"]

DEFAULT_RETENTION_MS = 7 * 24 * 60 * 60 * 1000
RETENTION_BATCH = 1_000


MAX_AS_OF_MS = 253_402_300_799_999
"""The last millisecond of the year 9999: `replay(as_of=...)` takes instants within +- it."""


class Audit:
    """What the App answers about the log beyond the live view (S27-S29)."""

    store: JobStore
    scheduled_functions: ScheduledFunctions
    clock: Clock
    retention_ms: int | None

    def children(self, job_id: str) -> list[str]:
        """Return the ids of the jobs `job_id` scheduled, in order (kept after retention)."""
        if self.store.load_job(job_key(job_id, "job id")) is None:
            raise JobNotFoundError(str(job_id))
        return self.scheduled_functions.children(job_id)

    def stats(self) -> Stats:
        """Return counts by state, the scheduler's lag, how many run, and a health word."""
        return self.scheduled_functions.stats(self.clock.now_ms())

    @overload
    def replay(
        self, as_of: None = None, *, progress: Callable[[int, int], None] | None = None
    ) -> int: ...
    @overload
    def replay(
        self, as_of: int, *, progress: Callable[[int, int], None] | None = None
    ) -> AsOfView: ...
    def replay(
        self, as_of: int | None = None, *, progress: Callable[[int, int], None] | None = None
    ) -> int | AsOfView:
        """Rebuild the view from the log (S27), or build a separate one as of `as_of` (ms).

        Without `as_of`, the live view is dropped and rebuilt, and the number of job events
        applied is returned. With it, the live view is left alone and a read-only view with the
        same `get` / `query` is returned, as it stood at that instant; close it when done.
        `progress(read, total)` is called after each page of the log.
        """
        given: object = progress  # typed; checked as the caller may pass anything
        if given is not None and not callable(given):
            raise ConfigurationError(
                f"progress must be a function of (read, total) or None, got {progress!r}"
            )
        db = self.store.db
        decoder = JobEventDecoder(self.store.mapper)
        if as_of is None:
            return rebuild(
                db,
                decoder,
                retain_after_ms=self._retain_after(self.clock.now_ms()),
                progress=progress,
            )
        if not is_plain_int(as_of):
            raise ConfigurationError(f"as_of must be epoch milliseconds (int), got {as_of!r}")
        if not -MAX_AS_OF_MS <= as_of <= MAX_AS_OF_MS:
            raise ConfigurationError(
                f"as_of must be epoch milliseconds within +-{MAX_AS_OF_MS:,} (the year 9999), "
                f"got {as_of!r}"
            )
        view = build_as_of(
            db,
            decoder,
            as_of,
            retain_after_ms=self._retain_after(as_of),
            progress=progress,
        )
        view.name_of = self.scheduled_functions.name_of
        return view

    def _retain_after(self, now_ms: int) -> int | None:
        return None if self.retention_ms is None else now_ms - self.retention_ms

    def apply_retention(self, now_ms: int) -> int:
        """Remove finished jobs older than the retention from the view, in batches (S28)."""
        before = self._retain_after(now_ms)
        if before is None:
            return 0
        removed = 0
        while True:
            with self.store.db.transaction(commit=True) as c:
                batch = prune(c, TABLE, before, RETENTION_BATCH)
            removed += batch
            if batch < RETENTION_BATCH:
                return removed
