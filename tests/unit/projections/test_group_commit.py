"""Group commit: saves that arrive during a commit share the next one, each with its own fate."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from schedlog.projections.group_commit import GroupCommit, Save
from tests.group_commit_queue import CountingQueue


class Recorder:
    """A fake transaction: the first commit waits until the test lets it go."""

    def __init__(self, fail_ids: set[int] | None = None, fail_all: bool = False) -> None:
        self.groups: list[list[int]] = []
        self.first_started = threading.Event()
        self.release = threading.Event()
        self.fail_ids = fail_ids or set()
        self.fail_all = fail_all

    def commit(self, group: list[Save]) -> None:
        names = [s.kwargs["n"] for s in group]
        if not self.groups:
            self.first_started.set()
            assert self.release.wait(10)
        self.groups.append(names)
        if self.fail_all and len(self.groups) > 1:
            raise OSError("disk full")
        for save in group:
            if save.kwargs["n"] in self.fail_ids:
                save.error = ValueError(f"conflict {save.kwargs['n']}")
            else:
                save.ids = [save.kwargs["n"]]


def _run(recorder: Recorder, n: int) -> dict[int, Any]:
    commit = GroupCommit(recorder.commit)
    queue = commit._queue = CountingQueue()
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        try:
            results[i] = commit.insert([], {"n": i})
        except Exception as e:
            results[i] = e

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert recorder.first_started.wait(10)
    others = [threading.Thread(target=call, args=(i,)) for i in range(1, n)]
    for t in others:
        t.start()
    # Let the first commit end only once every other save is queued behind it.
    with queue.changed:
        assert queue.changed.wait_for(lambda: len(queue) == n - 1, timeout=10)
    recorder.release.set()
    for t in [first, *others]:
        t.join(10)
    return results


def test_saves_queued_during_a_commit_share_the_next_one() -> None:
    recorder = Recorder()
    results = _run(recorder, 6)
    assert recorder.groups[0] == [0]  # the first caller commits alone, at once
    assert sorted(recorder.groups[1]) == [1, 2, 3, 4, 5]  # one transaction for the rest
    assert len(recorder.groups) == 2
    assert results == {i: [i] for i in range(6)}


def test_a_save_that_fails_alone_fails_only_its_caller() -> None:
    results = _run(Recorder(fail_ids={3}), 5)
    assert isinstance(results[3], ValueError)
    assert str(results[3]) == "conflict 3"
    assert {i: results[i] for i in (0, 1, 2, 4)} == {0: [0], 1: [1], 2: [2], 4: [4]}


def test_a_failed_transaction_fails_every_save_in_it_with_its_own_copy() -> None:
    results = _run(Recorder(fail_all=True), 4)
    assert results[0] == [0]
    errors = [results[i] for i in (1, 2, 3)]
    assert all(isinstance(e, OSError) and str(e) == "disk full" for e in errors)
    assert len({id(e) for e in errors}) == 3  # each caller raises its own copy
    assert all(isinstance(e.__cause__, OSError) for e in errors)


def test_one_caller_pays_nothing_extra() -> None:
    groups: list[int] = []

    def commit(group: list[Save]) -> None:
        groups.append(len(group))
        group[0].ids = [7]

    commit_ = GroupCommit(commit)
    assert [commit_.insert([], {}) for _ in range(3)] == [[7], [7], [7]]
    assert groups == [1, 1, 1]


def test_an_error_raised_by_the_commit_reaches_a_lone_caller() -> None:
    def commit(group: list[Save]) -> None:
        raise KeyError(len(group))

    with pytest.raises(KeyError):
        GroupCommit(commit).insert([], {})


def test_a_postgresql_group_split_gives_each_save_its_own_error() -> None:
    """Data PostgreSQL refuses in one save, then a connection lost on another, after a split.

    The group was split on conflicts only, and an error met while committing one by one went
    to every save of the group, also to those already committed.
    """
    import psycopg
    from eventsourcing.persistence import DataError, IntegrityError

    from schedlog.projections import pg_view

    committed: list[int] = []

    def commit_together(group: list[Save]) -> None:
        names = [s.kwargs["n"] for s in group]
        try:
            if 2 in names:
                raise psycopg.errors.UntranslatableCharacter("unsupported Unicode escape")
            if 3 in names:
                raise psycopg.errors.UniqueViolation("duplicate key (originator_id, version)")
        except psycopg.Error as e:
            raise pg_view._SplitGroup from e  # what `_rolled_back_on_error` raises
        if 4 in names:
            raise OSError("server closed the connection unexpectedly")
        committed.extend(names)
        for save in group:
            save.ids = [save.kwargs["n"]]

    recorder = pg_view.PgViewRecorder.__new__(pg_view.PgViewRecorder)
    recorder._commit_together = commit_together  # type: ignore[method-assign]
    saves = [Save([], {"n": n}) for n in range(1, 6)]
    recorder._commit_group(saves)
    assert committed == [1, 5]
    assert [s.ids for s in saves] == [[1], None, None, None, [5]]
    assert isinstance(saves[1].error, DataError)
    assert isinstance(saves[2].error, IntegrityError)
    assert isinstance(saves[3].error, OSError)
    assert saves[0].error is None
    assert saves[4].error is None
