"""The log watcher while the store is down: few log lines, a growing pause (S11b's follower)."""

from __future__ import annotations

import logging
import threading

import pytest

from schedlog.actors.follower import CHECK_EVERY, MAX_UNHEARD, LogWatcher, _Failing
from schedlog.actors.messages import LogAdvanced


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


class _Log:
    """A log other processes append to while the watcher waits: every 5th wait, one append."""

    def __init__(self, *, heard: bool) -> None:
        self.position = 10
        self.waits = 0
        self.heard = heard  # whether the append's NOTIFY reaches the watcher

    def log_position(self) -> int:
        return self.position

    def wait(self, _timeout_s: float) -> bool:
        self.waits += 1
        if self.waits % 5:
            return False
        self.position += 1
        return self.heard


class _Timer:
    def __init__(self) -> None:
        self.told: list[LogAdvanced] = []
        self.first = threading.Event()

    def tell(self, message: LogAdvanced) -> None:
        if message.handled is not None:
            message.handled.set()  # read at once, as the timer does
        self.told.append(message)
        self.first.set()


def _watch(log_: _Log, timer: _Timer, relisten: threading.Event, until: threading.Event) -> None:
    watcher = LogWatcher(
        log_,  # type: ignore[arg-type] # the one method the watcher reads
        timer,  # type: ignore[arg-type] # an ActorRef's tell
        poll_s=0.001,
        wait=log_.wait,
        relisten=relisten.set,
    )
    watcher.start()
    try:
        assert until.wait(10)
    finally:
        watcher.stop()


def test_a_silent_listener_is_found_out_by_the_log_moving() -> None:
    """A LISTEN connection dropped silently (a NAT's idle timeout) heard nothing; jobs other
    processes scheduled waited up to 30 s for the timer's own re-read (S11b: 100 ms)."""
    log_, timer, relistened = _Log(heard=False), _Timer(), threading.Event()
    _watch(log_, timer, relistened, relistened)  # the second look that finds appends unheard
    assert timer.told, "the timer was never told of the unheard appends"
    assert all(m.position is None for m in timer.told)  # "read to the log's end"
    assert log_.waits >= 3 * CHECK_EVERY  # the first look only notes the position


def test_a_listener_that_hears_the_appends_is_left_alone() -> None:
    """Every append heard: no new connection, however long it runs (the looks still tell the
    timer: one heard notification says nothing of a later append whose NOTIFY was lost)."""
    log_, timer, relistened = _Log(heard=True), _Timer(), threading.Event()
    enough = threading.Event()
    wait = log_.wait

    def counted(timeout_s: float) -> bool:
        if log_.waits >= 10 * CHECK_EVERY:
            enough.set()
        return wait(timeout_s)

    log_.wait = counted  # type: ignore[method-assign]
    _watch(log_, timer, relistened, enough)
    assert not relistened.is_set()
    assert len(timer.told) >= log_.position - 10  # at least one message per append heard


def test_an_append_lost_after_one_heard_is_found_by_the_next_look() -> None:
    """A heard NOTIFY and, later in the same second, a lost one: the look saw the log moved and
    something heard, and let it be; the lost append's job waited 27 s (a frozen LISTEN)."""
    log_, timer, relistened = _Log(heard=True), _Timer(), threading.Event()
    told_at: list[int] = []
    tell = timer.tell

    def noted(message: LogAdvanced) -> None:
        told_at.append(log_.waits)
        tell(message)

    timer.tell = noted  # type: ignore[method-assign]
    enough = threading.Event()

    def wait(_timeout_s: float) -> bool:
        log_.waits += 1
        if log_.waits >= 3 * CHECK_EVERY:
            enough.set()
        if log_.waits in {2, CHECK_EVERY + 2, CHECK_EVERY + 5}:
            log_.position += 1
            return log_.waits != CHECK_EVERY + 5  # this one's NOTIFY is lost
        return False

    log_.wait = wait  # type: ignore[method-assign]
    _watch(log_, timer, relistened, enough)
    # Told for the two heard, then by the look after the lost one: the 2nd look, once
    # 2 x CHECK_EVERY waits heard nothing (two heard ones end early: they do not count).
    assert told_at[:2] == [2, CHECK_EVERY + 2]
    assert 2 * CHECK_EVERY + 2 in told_at, told_at
    assert not relistened.is_set()  # something was heard in that interval


def test_a_stream_of_notifications_reads_no_position() -> None:
    """Each heard NOTIFY ended a wait early and counted toward the next look: under load a
    node read the log's position 86 times a second instead of once (one query each)."""
    log_, timer, relistened = _Log(heard=True), _Timer(), threading.Event()
    reads: list[int] = []
    enough = threading.Event()

    def position() -> int:
        reads.append(log_.waits)
        return log_.position

    def wait(_timeout_s: float) -> bool:
        log_.waits += 1
        if log_.waits >= 10 * CHECK_EVERY:
            enough.set()
        log_.position += 1
        return True  # every wait hears one

    log_.log_position = position  # type: ignore[method-assign]
    log_.wait = wait  # type: ignore[method-assign]
    _watch(log_, timer, relistened, enough)
    assert reads == []
    assert len(timer.told) >= 10 * CHECK_EVERY  # the notifications themselves tell the timer


def test_a_listener_that_never_hears_is_reopened_ever_less_often() -> None:
    """Behind a pooler that drops LISTEN, a node reconnected every ~3 s, forever."""
    log_, timer = _Log(heard=False), _Timer()
    reopened_at: list[int] = []
    enough = threading.Event()
    looks = [0]
    position = log_.log_position

    def counted() -> int:
        looks[0] += 1
        if looks[0] >= 200:
            enough.set()
        return position()

    log_.log_position = counted  # type: ignore[method-assign]
    watcher = LogWatcher(
        log_,  # type: ignore[arg-type]
        timer,  # type: ignore[arg-type]
        poll_s=0.001,
        wait=log_.wait,
        relisten=lambda: reopened_at.append(looks[0]),
    )
    watcher.start()
    try:
        assert enough.wait(30)
    finally:
        watcher.stop()
    # The first look only notes the position; then 2, 4, 8, ... unheard looks per reopening.
    gaps = [b - a for a, b in zip([1, *reopened_at], reopened_at, strict=False)]
    assert gaps[:6] == [2, 4, 8, 16, 32, MAX_UNHEARD], reopened_at
    assert set(gaps[6:]) <= {MAX_UNHEARD}
