"""How the timer shares due jobs among idle executors: alone, or in batches when behind (S13)."""

from __future__ import annotations

import zlib
from typing import Any

from schedlog.actors.lead import LEAD_MS, MAX_LEAD_MS, Lead
from schedlog.actors.messages import RunJob
from schedlog.actors.timer import BATCH, BEHIND_MS, Spread, TimerActor
from schedlog.projections.queries import DueJob
from schedlog.testing import FakeClock

T0 = 1_800_000_000_000


class Source:
    """A due index of `jobs`, all pending; the log never moves."""

    def __init__(self, jobs: list[DueJob], nodes: list[str] | None = None) -> None:
        self.jobs = sorted(jobs)
        self.nodes = nodes or []

    def due(self, before_ms: int, limit: int, after: tuple[int, int] | None = None) -> list[DueJob]:
        rows = [
            j
            for j in self.jobs
            if j.run_at < before_ms and (after is None or (j.run_at, j.seq) > after)
        ]
        return rows[:limit]

    def log_position(self) -> int:
        return 0

    def live_nodes(self, now_ms: int) -> list[str]:
        del now_ms
        return self.nodes

    def jobs_since(self, position: int) -> tuple[int, list[DueJob]]:
        return position, []


class Executor:
    """Stands in for an executor's ActorRef: keeps what it is told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, ...]] = []
        self.not_before: list[int] = []

    def tell(self, message: Any) -> None:
        assert isinstance(message, RunJob)
        self.told.append(message.job_ids)
        self.not_before.append(message.not_before)


def _jobs(n: int, run_at: int = T0) -> list[DueJob]:
    return [DueJob(run_at, seq, f"job-{seq:04d}") for seq in range(1, n + 1)]


def _dispatch(
    clock: FakeClock,
    source: Source,
    executors: int,
    spread: Spread | None = None,
    lead: Lead | None = None,
) -> list[Executor]:
    timer = TimerActor(clock, source, spread, lead)
    refs = [Executor() for _ in range(executors)]
    timer.add_executors(refs)  # type: ignore[arg-type]  # it reads the window and dispatches
    timer.on_stop()
    return refs


def test_jobs_just_come_due_start_one_per_executor() -> None:
    clock = FakeClock(T0)
    refs = _dispatch(clock, Source(_jobs(10)), executors=4)
    assert [r.told for r in refs] == [[(f"job-{k:04d}",)] for k in (4, 3, 2, 1)]


def test_a_backlog_is_shared_in_equal_batches_in_due_order() -> None:
    clock = FakeClock(T0 + BEHIND_MS)
    refs = _dispatch(clock, Source(_jobs(10)), executors=4)
    told = [r.told for r in reversed(refs)]  # idle executors are taken from the end
    assert told == [
        [("job-0001", "job-0002")],
        [("job-0003", "job-0004")],
        [("job-0005", "job-0006")],
        [("job-0007", "job-0008")],
    ]  # 9 and 10 wait for the next free executor


def test_no_batch_is_larger_than_the_cap() -> None:
    clock = FakeClock(T0 + BEHIND_MS)
    refs = _dispatch(clock, Source(_jobs(10 * BATCH)), executors=2)
    assert [len(r.told[0]) for r in refs] == [BATCH, BATCH]


def test_another_nodes_jobs_are_never_batched() -> None:
    me, other = "node-a", "node-b"
    nodes = sorted([me, other])
    jobs = _jobs(40)
    mine = {j.job_id for j in jobs if nodes[zlib.crc32(j.job_id.encode()) % 2] == me}
    assert 0 < len(mine) < len(jobs)
    clock = FakeClock(T0 + 10_000)  # everything is past the grace: this node may take any
    refs = _dispatch(clock, Source(jobs, [me, other]), executors=30, spread=Spread(me, 2_000))
    units = [unit for r in refs for unit in r.told]
    assert sorted(j for unit in units for j in unit) == sorted(j.job_id for j in jobs)
    assert any(len(unit) > 1 for unit in units)  # its own jobs were batched
    for unit in units:
        assert len(unit) == 1 or set(unit) <= mine


def test_a_job_coming_due_goes_to_an_executor_lead_ms_early_with_its_start_time_s13() -> None:
    soon = [DueJob(T0 + LEAD_MS, 1, "job-soon")]
    clock = FakeClock(T0)
    (ref,) = _dispatch(clock, Source([*soon, DueJob(T0 + LEAD_MS + 1, 2, "job-later")]), 1)
    assert ref.told == [("job-soon",)]
    assert ref.not_before == [T0 + LEAD_MS]  # read now, started at its due time
    early = _dispatch(FakeClock(T0 - 1), Source(soon), executors=1)
    assert [r.told for r in early] == [[]]  # more than LEAD_MS ahead: not yet


def test_due_jobs_and_batches_start_at_once() -> None:
    refs = _dispatch(FakeClock(T0), Source(_jobs(2)), executors=2)
    assert [r.not_before for r in refs] == [[0], [0]]
    behind = _dispatch(FakeClock(T0 + BEHIND_MS), Source(_jobs(10)), executors=2)
    assert [r.not_before for r in behind] == [[0], [0]]


def test_the_lead_follows_slow_claims_up_to_its_cap_and_decays_back() -> None:
    lead = Lead()
    assert lead.ms == LEAD_MS
    lead.observe(1)  # a claim that fit: no change
    assert lead.ms == LEAD_MS
    lead.observe(12)
    assert lead.ms == 12 + 2  # what it took, and a margin
    lead.observe(500)
    assert lead.ms == MAX_LEAD_MS
    for _ in range(31):
        lead.observe(0)
    assert LEAD_MS < lead.ms < MAX_LEAD_MS  # decays gradually
    for _ in range(500):
        lead.observe(0)
    assert lead.ms == LEAD_MS  # never below


def _lead(ms: int) -> Lead:
    lead = Lead()
    lead.observe(ms - 2)
    assert lead.ms == ms
    return lead


def test_a_longer_lead_hands_jobs_over_earlier_but_leaves_one_executor_idle() -> None:
    jobs = [DueJob(T0 + 10 + k, k, f"job-{k}") for k in range(1, 6)]  # due in 11-15 ms
    refs = _dispatch(FakeClock(T0), Source(jobs), executors=4, lead=_lead(20))
    told = [unit for r in refs for unit in r.told]
    assert sorted(told) == [("job-1",), ("job-2",), ("job-3",)]  # one executor stays idle
    assert sorted(n for r in refs for n in r.not_before) == [T0 + 11, T0 + 12, T0 + 13]


def test_with_one_idle_executor_the_lead_is_lead_ms() -> None:
    soon = [DueJob(T0 + LEAD_MS + 1, 1, "job-1")]
    refs = _dispatch(FakeClock(T0), Source(soon), executors=1, lead=_lead(20))
    assert [r.told for r in refs] == [[]]  # more than LEAD_MS ahead: not yet
    refs = _dispatch(FakeClock(T0), Source(soon), executors=2, lead=_lead(20))
    assert sorted(unit for r in refs for unit in r.told) == [("job-1",)]


def test_retries_are_kept_but_a_write_outage_cannot_pull_the_backlog_into_memory() -> None:
    """Every claim meets a write outage: each job dispatched comes back a retry (in 1 s)."""
    from schedlog.actors.messages import JobsFinished
    from schedlog.actors.timer import WINDOW

    clock = FakeClock(T0)
    timer = TimerActor(clock, Source(_jobs(3 * WINDOW, T0 - 1_000)))
    refs = [Executor() for _ in range(2)]
    timer.add_executors(refs)  # type: ignore[arg-type]
    while any(r.told for r in refs):
        for ref in refs:
            while ref.told:
                ids = ref.told.pop(0)
                retries = tuple((j, DueJob(clock.now_ms() + 1_000, 0, j)) for j in ids)
                timer.on_receive(JobsFinished(retries, ref))  # type: ignore[arg-type]
    assert len(timer._retries) == len(timer._heap) == 2 * WINDOW  # not the 3,000 of the backlog
    clock.advance(1_000)  # the store is back: the retries come due and start first
    timer._pump()
    assert all(r.told for r in refs)
    timer.on_stop()


def test_retries_are_pushed_again_by_their_new_owner_when_the_nodes_change() -> None:
    """Node b died: node a owns b's job now; its retry kept b's 2 s grace (2,400 ms, not 400)."""
    from schedlog.actors.messages import JobsFinished, Wake

    nodes = ["node-a", "node-b"]
    job = next(
        f"job-{n}" for n in range(100) if zlib.crc32(f"job-{n}".encode()) % 2 == 1
    )  # node-b's
    source = Source([DueJob(T0 - 5_000, 1, job)], nodes=list(nodes))
    clock = FakeClock(T0)
    timer = TimerActor(clock, source, Spread("node-a", 2_000))
    ref = Executor()
    timer.add_executors([ref])  # type: ignore[list-item]
    assert ref.told == [(job,)]  # it waited past the grace: node-a takes it
    retry = DueJob(T0 + 500, 0, job)  # its claim met an outage
    timer.on_receive(JobsFinished(((job, retry),), ref))  # type: ignore[arg-type]
    assert [d.run_at for d in timer._heap] == [T0 + 500 + 2_000]  # still node-b's: the grace
    source.nodes = ["node-a"]  # node-b's heartbeat stopped
    clock.advance(100)
    timer.on_receive(Wake())
    assert [d.run_at for d in timer._heap] == [T0 + 500]  # node-a's own now: no grace
    timer.on_stop()
