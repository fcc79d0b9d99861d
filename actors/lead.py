"""How long before its due time a job that comes due alone is handed over (runtime).

The timer hands such a job to an idle executor `Lead.ms` early; the executor reads it (an
action: also claims it) and starts it on time, so the wake-up, the hand-over, the read and an
action's claim are not in its start lag.
"""

from __future__ import annotations

import math
import threading

__all__ = ["LEAD_MS", "MAX_LEAD_MS", "Lead"]

LEAD_MS = 8
"""How long before its due time a job that comes due alone goes to an idle executor, which
reads it (an action: also claims it, saving its `Started`) and starts it on time:
the wake-up, the hand-over, the read and an action's claim are not in its lag. The price: an
action shows `inProgress` up to this long before it is due, and the executor waits meanwhile.
Measured start lag of actions, p50/p99 ms (bench W3, 2 runs each): 2 ms, 0.36/2.8-4.3 (the
claim's fsync often outlasted the lead); 3 ms, 0.25-0.41/1.2-2.6; 5 ms, 0.33-0.37/1.6-1.8.
On 2026-12-03 (a quieter machine, in-process W3 shape, 1,000 actions over 5 s, 6 interleaved
runs each) claims took 1-1.5 ms at the median and 4-7 ms at p99, waiting for the commit in
flight: p99 1.59-3.10 ms (median 2.7) at 5 ms with the cancel look 1 ms ahead, 0.96-4.08
(median 1.1, lower in 5 of 6 pairs) at 8 ms with the look 2 ms ahead (`CHECK_AHEAD_MS`).
It grows when claims take longer (`Lead`)."""
MAX_LEAD_MS = 25
"""The longest lead (`Lead`): the executor that takes such a job waits idle until it is due.

Measured (in-process W3 shape, 1,000 actions over 5 s, 4 interleaved pairs, 2026-12-03, a
day of 10-50 ms fsyncs): p99 7.4-9.9 ms against 8.0-16.0 at a fixed 5 ms, p90 2.4-3.9 against
2.1-5.7."""
_LEAD_MARGIN_MS = 2
_LEAD_DECAY = 1 / 32


class Lead:
    """How long before its due time a job coming due alone goes to an idle executor.

    `LEAD_MS` while an action's read and claim (one commit) fit in it; when they took longer
    (a slow disk, a busy PostgreSQL), longer, so that the commit stays out of the start lag:
    each claim made ahead is reported (`observe`), the lead jumps to what it took plus a
    margin, up to `MAX_LEAD_MS`, and decays back by a 32nd of the excess per claim. The
    executors write it; the timer reads it (used only while two executors or more are idle,
    so one is left for what comes due meanwhile). On a fake clock claims take no time: it stays
    `LEAD_MS`.
    """

    def __init__(self) -> None:
        self._ms = float(LEAD_MS)
        self._lock = threading.Lock()

    def observe(self, took_ms: int) -> None:
        """Report that a job handed over early took `took_ms` to read and claim."""
        with self._lock:
            decayed = self._ms - (self._ms - LEAD_MS) * _LEAD_DECAY
            if decayed - LEAD_MS < 0.5:  # noqa: PLR2004 - back at the base
                decayed = LEAD_MS
            self._ms = max(min(took_ms + _LEAD_MARGIN_MS, MAX_LEAD_MS), decayed, LEAD_MS)

    @property
    def ms(self) -> int:
        """The lead now, in whole milliseconds."""
        return math.ceil(self._ms)
