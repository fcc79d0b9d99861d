"""Which errors are worth retrying, and how long to wait before the next attempt (runtime).

The one place errors are classified (S15, S16):

- `CONFLICT`: a version conflict on a save (`ConflictError`, eventsourcing `IntegrityError`).
  The mutation gets `Retried` and runs again after a random delay up to min(100 ms x 2^n, 60 s).
- `TRANSIENT`: the store is unavailable for now: SQLite "database is locked" or busy, a
  read-only or full disk, an I/O error, a dropped connection (eventsourcing `OperationalError`,
  `InterfaceError`, `ConnectionUnavailableError`), or an `OSError`. The runtime backs off for a
  random delay up to min(500 ms x 2^n, 2 h) and tries again, without limit.
- `PERMANENT`: anything else. The job fails; a mutation's writes are dropped.

Errors raised by user functions never reach `classify`: the executor records them as the job's
outcome. `classify` sees only what the store raised, directly or chained under `StoreError`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError

from schedlog.events import ConflictError, StoreError

if TYPE_CHECKING:
    import random

__all__ = [
    "CONFLICT_BASE_MS",
    "CONFLICT_CAP_MS",
    "TRANSIENT_BASE_MS",
    "TRANSIENT_CAP_MS",
    "Fault",
    "backoff_ms",
    "classify",
]

CONFLICT_BASE_MS = 100
CONFLICT_CAP_MS = 60_000
TRANSIENT_BASE_MS = 500
TRANSIENT_CAP_MS = 2 * 60 * 60 * 1000


class Fault(enum.Enum):
    """How an error is handled: see the module's table."""

    CONFLICT = "conflict"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


def classify(error: BaseException) -> Fault:
    """Return how the runtime treats `error`, looking through `StoreError` to its cause."""
    if isinstance(error, (ConflictError, IntegrityError)):
        return Fault.CONFLICT
    cause = error.__cause__ if isinstance(error, StoreError) else error
    if isinstance(cause, IntegrityError):
        return Fault.CONFLICT
    if isinstance(cause, (OperationalError, InterfaceError, OSError)):
        return Fault.TRANSIENT
    return Fault.PERMANENT


def backoff_ms(fault: Fault, attempt: int, rng: random.Random, cap_ms: int | None = None) -> int:
    """Return a full-jitter delay before retry number `attempt` (1 for the first retry).

    Random from 1 ms up to min(base x 2^attempt, cap): 100 ms and 60 s for conflicts, 500 ms
    and 2 h for transient store errors; `cap_ms` lowers the cap.
    """
    if fault is Fault.CONFLICT:
        base, cap = CONFLICT_BASE_MS, CONFLICT_CAP_MS
    elif fault is Fault.TRANSIENT:
        base, cap = TRANSIENT_BASE_MS, TRANSIENT_CAP_MS
    else:
        msg = f"a {fault.value} error is not retried"
        raise ValueError(msg)
    if cap_ms is not None:
        cap = min(cap, cap_ms)
    exponent = min(max(attempt, 0), 32)  # past the cap anyway; keeps the number small
    return rng.randint(1, min(base * 2**exponent, cap))  # never 0: a retry is never immediate
