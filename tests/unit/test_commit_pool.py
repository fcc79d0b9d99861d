"""The commit pool: final commits off the executors' threads, at most one in flight per thread."""

from __future__ import annotations

import threading

from schedlog.actors.commits import CommitPool
from schedlog.projections.queries import DueJob


def test_results_and_errors_reach_the_futures() -> None:
    pool = CommitPool(2)
    pool.start()
    try:
        ok = pool.submit(lambda: DueJob(5, 0, "a"))
        assert ok.result(5) == DueJob(5, 0, "a")

        def boom() -> DueJob | None:
            msg = "store gone"
            raise OSError(msg)

        failed = pool.submit(boom)
        assert isinstance(failed.exception(5), OSError)
    finally:
        assert pool.stop(5)


def test_a_submit_waits_while_every_thread_has_a_commit_in_flight() -> None:
    """Backpressure: a slow disk holds the executors back instead of piling up finished work."""
    pool = CommitPool(2)
    pool.start()
    release = threading.Event()
    started = threading.Barrier(3)

    def slow() -> None:
        started.wait(5)
        release.wait(5)

    first, second = pool.submit(slow), pool.submit(slow)
    started.wait(5)  # both threads are busy
    third_submitted = threading.Event()

    def submit_third() -> None:
        pool.submit(lambda: None)
        third_submitted.set()

    submitter = threading.Thread(target=submit_third)
    submitter.start()
    # A bounded wait for something that must not happen: the third submit is held back.
    assert not third_submitted.wait(0.3)
    release.set()
    assert third_submitted.wait(5)
    submitter.join(5)
    assert first.result(5) is None
    assert second.result(5) is None
    assert pool.stop(5)


def test_stop_waits_for_the_commits_in_flight() -> None:
    pool = CommitPool(1)
    pool.start()
    release = threading.Event()
    future = pool.submit(lambda: release.wait(5) and None)
    stopper_done = threading.Event()
    stopped: list[bool] = []

    def stop() -> None:
        stopped.append(pool.stop(5))
        stopper_done.set()

    threading.Thread(target=stop).start()
    assert not future.done()
    release.set()
    assert stopper_done.wait(5)
    assert stopped == [True]
    assert future.done()
