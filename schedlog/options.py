"""The checks of the App's options and timeouts: each bad value refused by name (front door)."""

from __future__ import annotations

import math
import threading

from schedlog.errors import ConfigurationError
from schedlog.events.validation import is_plain_int

__all__ = ["MAX_SETTING_MS", "check_options", "check_seconds"]

MAX_SETTING_MS = 100 * 366 * 86_400_000
"""The longest lease or retention (100 years): times stay far inside the store's 64 bits."""


def check_options(
    clock: object, max_concurrency: object, lease_ms: object, retention_ms: object
) -> None:
    """Refuse the App's options that are out of range or of the wrong type, naming them."""
    if clock is not None and not all(
        callable(getattr(clock, m, None)) for m in ("now_ms", "wake_at")
    ):
        raise ConfigurationError(
            f"clock must be a Clock (now_ms and wake_at, e.g. SystemClock()), got {clock!r}"
        )
    if clock is not None and not is_plain_int(now := clock.now_ms()):  # type: ignore[attr-defined]
        raise ConfigurationError(
            f"clock.now_ms() must return whole epoch milliseconds (an int), got {now!r}"
        )
    if not is_plain_int(max_concurrency) or not 1 <= max_concurrency <= 256:  # noqa: PLR2004
        raise ConfigurationError(
            f"max_concurrency must be an int from 1 to 256, got {max_concurrency!r}"
        )
    if not is_plain_int(lease_ms) or not 100 <= lease_ms <= MAX_SETTING_MS:  # noqa: PLR2004
        raise ConfigurationError(
            f"lease_ms must be an int from 100 to {MAX_SETTING_MS:,} (100 years), got {lease_ms!r}"
        )
    if retention_ms is not None and (
        not is_plain_int(retention_ms) or not 0 <= retention_ms <= MAX_SETTING_MS
    ):
        raise ConfigurationError(
            f"retention_ms must be an int from 0 to {MAX_SETTING_MS:,} (100 years), "
            f"or None (keep forever), got {retention_ms!r}"
        )


MAX_TIMEOUT_S = int(threading.TIMEOUT_MAX / 2)
"""The longest `timeout_s` taken (about 146 years on Linux): Python's own waits overflow past
`threading.TIMEOUT_MAX`, and some add the time already spent."""


def check_seconds(timeout_s: object) -> None:
    """Refuse a `timeout_s` that is not a finite number of seconds >= 0, naming it."""
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise ConfigurationError(f"timeout_s must be a number of seconds, got {timeout_s!r}")
    if not 0 <= timeout_s < math.inf:
        raise ConfigurationError(f"timeout_s must be finite and >= 0, got {timeout_s!r}")
    if timeout_s > MAX_TIMEOUT_S:  # past it, Python's own waits overflow (OverflowError)
        raise ConfigurationError(
            f"timeout_s must be at most {MAX_TIMEOUT_S:,} s, got {timeout_s!r}"
        )
