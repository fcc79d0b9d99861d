"""The error classification and the backoff bounds of retries (S15, S16)."""

from __future__ import annotations

import random
import sqlite3

import pytest
from eventsourcing.persistence import (
    ConnectionUnavailableError,
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

from schedlog.actors.retry import Fault, backoff_ms, classify
from schedlog.events import ConflictError, StoreError


def chained(outer: StoreError, cause: BaseException) -> StoreError:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (ConflictError("version conflict"), Fault.CONFLICT),
        (IntegrityError("UNIQUE constraint failed"), Fault.CONFLICT),
        (chained(StoreError("x"), IntegrityError("dup")), Fault.CONFLICT),
        (chained(StoreError("x"), OperationalError("database is locked")), Fault.TRANSIENT),
        (chained(StoreError("x"), OperationalError("database or disk is full")), Fault.TRANSIENT),
        (chained(StoreError("x"), InterfaceError("connection dropped")), Fault.TRANSIENT),
        (chained(StoreError("x"), ConnectionUnavailableError("pool timeout")), Fault.TRANSIENT),
        (OperationalError(sqlite3.OperationalError("disk I/O error")), Fault.TRANSIENT),
        (OSError("read-only file system"), Fault.TRANSIENT),
        (chained(StoreError("x"), ProgrammingError("no such table")), Fault.PERMANENT),
        (chained(StoreError("x"), DataError("bad value")), Fault.PERMANENT),
        (StoreError("no cause"), Fault.PERMANENT),
        (ValueError("user error"), Fault.PERMANENT),
        (TypeError("not serializable"), Fault.PERMANENT),
    ],
)
def test_classification_s15_s16(error: BaseException, fault: Fault) -> None:
    assert classify(error) is fault


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 9, 10, 20, 100])
def test_conflict_backoff_is_full_jitter_up_to_100ms_doubling_capped_at_60s(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(100 * 2**attempt, 60_000)
    delays = [backoff_ms(Fault.CONFLICT, attempt, rng) for _ in range(2_000)]
    assert min(delays) >= 0
    assert max(delays) <= ceiling
    assert max(delays) > ceiling * 0.9  # the whole range is used, not just its start
    assert min(delays) < ceiling * 0.1


@pytest.mark.parametrize("attempt", [0, 1, 3, 13, 14, 40])
def test_transient_backoff_is_full_jitter_up_to_500ms_doubling_capped_at_2h(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(500 * 2**attempt, 2 * 3600 * 1000)
    delays = [backoff_ms(Fault.TRANSIENT, attempt, rng) for _ in range(2_000)]
    assert 0 <= min(delays) < ceiling * 0.1
    assert ceiling * 0.9 < max(delays) <= ceiling


def test_a_lower_cap_bounds_the_jitter_and_never_raises_it() -> None:
    rng = random.Random(3)
    delays = [backoff_ms(Fault.TRANSIENT, 20, rng, cap_ms=30_000) for _ in range(2_000)]
    assert min(delays) >= 1
    assert max(delays) <= 30_000
    assert max(delays) > 25_000  # full jitter up to the cap
    early = [backoff_ms(Fault.TRANSIENT, 1, rng, cap_ms=30_000) for _ in range(200)]
    assert max(early) <= 1_000  # below the cap, the base x 2^n bound holds


def test_permanent_errors_have_no_backoff() -> None:
    with pytest.raises(ValueError, match="not retried"):
        backoff_ms(Fault.PERMANENT, 1, random.Random(0))
