"""The log watcher while the store is down: few log lines, a growing pause (S11b's follower)."""

from __future__ import annotations

import logging

import pytest

from schedlog.actors.follower import _Failing


def test_a_store_outage_logs_a_few_lines_and_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    """A 3 s PostgreSQL outage logged 66 tracebacks (one per 50 ms poll) and 1,156 lines."""
    failing = _Failing("cannot wait for notifications")
    assert failing.pause() == 1
    pauses = []
    with caplog.at_level(logging.WARNING, logger="schedlog.actors.follower"):
        for n in range(250):
            failing.failed(OSError(f"connection refused {n}"))
            pauses.append(failing.pause())
        failing.ok()
    records = caplog.records
    assert [r.exc_info is not None for r in records] == [True, False, False, False]
    assert "(100 times so far): connection refused 99" in records[1].getMessage()
    assert "(200 times so far)" in records[2].getMessage()
    assert "the store is back after 250 failures" in records[3].getMessage()
    assert pauses[:5] == [2, 4, 8, 16, 20]
    assert set(pauses[5:]) == {_Failing.MAX_PAUSE}
    assert failing.pause() == 1  # back to one poll once the store answers
