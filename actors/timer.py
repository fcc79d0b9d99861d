"""TimerActor: starts each pending job at its due time, in order, within the concurrency bound.

The view's index on `(run_at, seq) WHERE state='pending'` is the source of truth; the actor keeps
only a window of it in a heap (jobs due before `horizon_end`), so memory does not grow with the
backlog. Jobs saved by this process are pushed into the window directly; jobs saved by other
processes are found by re-reading the window when the log grows (S11b). The clock wakes the actor
at the earliest due time; the callback only tells a `Wake`, so the actor never sleeps.
"""

from __future__ import annotations

import heapq
import logging
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from schedlog.actors.base import RuntimeActor, wake_me_at
from schedlog.actors.lead import LEAD_MS
from schedlog.actors.messages import (
    BackingOff,
    JobsFinished,
    JobsScheduled,
    LogAdvanced,
    RunJob,
    Settle,
    SlotFree,
    StopDispatching,
    Wake,
)
from schedlog.projections.queries import DueJob

if TYPE_CHECKING:
    from concurrent.futures import Future

    import pykka

    from schedlog.actors.lead import Lead
    from schedlog.actors.ports import Clock, JobSource, Wakeup

__all__ = ["Spread", "TimerActor"]

log = logging.getLogger(__name__)

HORIZON_MS = 60_000
"""How far ahead the window reaches."""
WINDOW = 1_000
"""How many jobs one read of the index brings into the window at most."""
BATCH = 64
"""How many due jobs one executor takes at once when the timer is behind (see `BEHIND_MS`):
their claims and commits then share transactions (a backlog drains several times faster).

Measured (W2(b), 10,000 jobs already stored, interleaved runs on 2026-12-03): quick actions
(claimed 32 at a time) 3,727-4,525 jobs/s at 32 against 4,490-4,844 at 64; mutations (a
batch commits in one save) 4,522-5,144 against 5,102-6,523 (3 runs each, 64 ahead in each
pair). A batch's jobs start one after another, so a larger one only helps quick jobs; slow
ones hand the rest back after `batch.BATCH_BUDGET_MS`."""
BEHIND_MS = 20
"""How late the earliest due job must be before executors take batches: a job that has just
come due starts alone, on the first free executor (a batch's jobs start one after another)."""
_MAX_SEQ = 2**63 - 1
READ_RETRY_MS = 250
NODES_REFRESH_MS = 50
"""How often a node sharing work re-reads the live nodes (nodes starting together see each
other within this, instead of each owning every job until the window's next restart). One
small query each time; at 250 ms, 2-node drains ran 110-380 bodies twice while the nodes
started, and two nodes drained slower than one (4,208-5,437 vs 4,575-5,448 jobs/s)."""
READ_RETRY_CAP_MS = 30_000


@dataclass(frozen=True, slots=True)
class Spread:
    """Share the work among live nodes: each job belongs to one node by a hash of its id.

    A node starts the jobs it owns at their due time, and anybody else's only once they have
    waited `grace_ms` past it (the owner may have died); the version check stays the arbiter.
    """

    node_id: str
    grace_ms: int


class TimerActor(RuntimeActor):
    """Keeps the near future in a heap and hands due jobs to idle executors (S13)."""

    def __init__(
        self,
        clock: Clock,
        source: JobSource,
        spread: Spread | None = None,
        lead: Lead | None = None,
    ) -> None:
        super().__init__()
        self._clock = clock
        self._source = source
        self._lead = lead
        self._spread = spread
        self._nodes: list[str] = []
        self._nodes_at = 0  # when to read the live nodes again
        self._heap: list[DueJob] = []
        self._queued: set[str] = set()
        self._running: dict[str, DueJob] = {}  # as they were queued
        self._retries: dict[str, DueJob] = {}
        """Retries the executors asked for, kept in the heap whatever the window: most write
        nothing (a read or a claim that met a store outage), so the due index still holds the
        job at its old time, already read past; only the next full read (30 s) found it."""
        self._backing_off: dict[str, int] = {}  # running jobs waiting out a store outage
        self._idle: list[pykka.ActorRef[Any]] = []
        # The window holds every pending job whose (run_at, seq) is <= _boundary; None means
        # it must be read again from the start (at start-up, or when another process wrote).
        self._boundary: tuple[int, int] | None = None
        self._horizon_at = 0  # when the window must be read again from the start
        self._truncated = False  # the last read hit WINDOW: more rows lie past _boundary
        self._read_failures = 0
        self._retry_at = 0
        self._log_position: int | None = None  # followed from start(); None: not yet
        self._armed_at: int | None = None
        self._wakeup: Wakeup | None = None
        self._settling: list[Future[None]] = []
        self._dispatching = True

    def add_executors(self, executors: list[pykka.ActorRef[Any]]) -> None:
        """Take the executors, and follow the log from here on (asked once, at start)."""
        self._idle.extend(executors)
        self._log_position = self._source.log_position()  # the first window read covers before
        self._pump()

    def on_receive(self, message: Any) -> Any:
        """Handle one message; every message ends with a pump (dispatch, re-arm, settle)."""
        match message:
            case JobsScheduled(jobs):
                for job in jobs:
                    self._push(job)
            case Wake():
                self._armed_at = None
            case BackingOff() | JobsFinished() | SlotFree():
                self._from_executor(message)
            case LogAdvanced(position, handled):
                if handled is not None:
                    handled.set()  # what lands from now on, this read may miss: tell me again
                known = self._log_position
                if known is not None and (position is None or position > known):
                    self._follow_log()
            case Settle(reply):
                self._check_log()
                self._settling.append(reply)
            case StopDispatching():
                self._dispatching = False
                self._disarm()
                return len(self._running)
            case _:
                log.warning("timer: unexpected message %r", message)
        self._pump()
        return None

    def on_stop(self) -> None:
        """Cancel the pending wake-up and release anyone waiting to settle."""
        self._disarm()
        for reply in self._settling:
            reply.set_result(None)
        self._settling.clear()

    # Internals.

    def _from_executor(self, message: BackingOff | JobsFinished | SlotFree) -> None:
        match message:
            case BackingOff(job_id, until_ms):
                self._backing_off[job_id] = until_ms
            case JobsFinished(finished, executor, returned):
                for job_id, retry in finished:
                    self._finished(job_id, retry)
                for job_id in returned:  # not started: queued again in their place
                    job = self._running.pop(job_id, None)
                    if job is not None:
                        heapq.heappush(self._heap, job)
                        self._queued.add(job_id)
                if executor is not None:
                    self._idle.append(executor)
            case SlotFree(executor):
                self._idle.append(executor)

    def _finished(self, job_id: str, retry: DueJob | None) -> None:
        self._running.pop(job_id, None)
        self._backing_off.pop(job_id, None)
        if retry is not None:
            self._retries[job_id] = retry
            self._push(retry)

    def _push(self, job: DueJob) -> None:
        if job.job_id in self._queued or job.job_id in self._running:
            return
        retry = job.job_id in self._retries
        if self._spread is not None and self._owner(job.job_id) != self._spread.node_id:
            # Another live node owns it: take it only if it is still waiting after the grace.
            job = DueJob(job.run_at + self._spread.grace_ms, job.seq, job.job_id)
        if retry or (self._boundary is not None and (job.run_at, job.seq) <= self._boundary):
            heapq.heappush(self._heap, job)
            self._queued.add(job.job_id)

    def _owner(self, job_id: str) -> str:
        nodes = self._nodes or [self._spread.node_id if self._spread else ""]
        return nodes[zlib.crc32(job_id.encode()) % len(nodes)]

    def _stealing(self, now: int) -> bool:
        """Tell whether the next job to start is another node's, while more rows lie unread.

        Then this node's own due jobs in the window are done: read on, rather than take over
        the jobs their owner is starting (a race each time, settled by the version check).
        """
        heap = self._heap
        return (
            self._spread is not None
            and bool(heap)
            and heap[0].run_at <= now
            and self._owner(heap[0].job_id) != self._spread.node_id
        )

    def _check_log(self) -> None:
        if self._log_position is not None:
            self._follow_log()

    def _follow_log(self) -> None:
        """Push the jobs that other processes (or this one) made due since the last look."""
        assert self._log_position is not None  # noqa: S101
        while True:
            try:
                position, jobs = self._source.jobs_since(self._log_position)
            except Exception:
                log.warning("timer: cannot follow the log; will try again", exc_info=True)
                return
            for job in jobs:
                self._push(job)
            if position == self._log_position:
                return
            self._log_position = position

    def _read_window(self, now: int, *, restart: bool) -> None:
        """Read the next rows of the due index into the heap (from the start if `restart`)."""
        after = None if restart else self._boundary
        rows = self._source.due(now + HORIZON_MS, WINDOW, after)
        self._truncated = len(rows) == WINDOW
        if self._truncated:
            self._boundary = (rows[-1].run_at, rows[-1].seq)
        else:
            self._boundary = (now + HORIZON_MS, _MAX_SEQ)
        if restart:
            self._horizon_at = now + HORIZON_MS // 2
            if self._spread is not None:
                self._nodes = self._live_nodes(now)
            # The boundary may have moved down (more rows due than fit): forget what lies
            # past it, or jobs saved later in between would be skipped by `_push`.
            boundary = self._boundary
            kept = [
                j for j in self._heap if (j.run_at, j.seq) <= boundary or j.job_id in self._retries
            ]
            if len(kept) != len(self._heap):
                self._heap[:] = kept
                heapq.heapify(self._heap)
                self._queued = {j.job_id for j in kept}
        for job in rows:
            self._push(job)

    def _live_nodes(self, now: int) -> list[str]:
        assert self._spread is not None  # noqa: S101
        self._nodes_at = now + NODES_REFRESH_MS
        return sorted({*self._source.live_nodes(now), self._spread.node_id})

    def _refresh_nodes(self, now: int) -> None:
        """Re-read the live nodes; if they changed, who owns which job did: read the window anew."""
        nodes = self._live_nodes(now)
        if nodes != self._nodes:
            self._nodes = nodes  # before the retries are pushed again by their new owner
            self._heap.clear()
            self._queued.clear()
            self._boundary = None  # the read below restarts, pushing each job by its new owner
            for retry in list(self._retries.values()):
                self._push(retry)

    def _pump(self) -> None:
        if not self._dispatching:
            return
        now = self._clock.now_ms()
        heap = self._heap
        try:
            if self._spread is not None and self._boundary is not None and now >= self._nodes_at:
                self._refresh_nodes(now)
            if self._boundary is None or now >= self._horizon_at:
                self._read_window(now, restart=True)
            elif self._truncated and (
                len(heap) - min(len(self._retries), WINDOW) < WINDOW // 4 or self._stealing(now)
            ):  # the window's own jobs run low (retries, kept apart, count past WINDOW: in a
                # long write outage every job dispatched comes back a retry, and the heap
                # would otherwise take in the whole backlog)
                self._read_window(now, restart=False)
        except Exception:
            # The store is unavailable: keep what is queued, read again after a backoff.
            self._read_failures += 1
            delay = min(READ_RETRY_MS * 2 ** min(self._read_failures, 10), READ_RETRY_CAP_MS)
            log.warning("timer: cannot read the due index; again in %d ms", delay, exc_info=True)
            self._boundary = None
            self._retry_at = now + delay
        else:
            self._read_failures = 0
        self._dispatch(now)
        self._arm(now)
        self._settle(now)

    def _dispatch(self, now: int) -> None:
        """Hand the due jobs, in start order, to the idle executors (S13).

        Each executor takes one job; when the timer is behind (a backlog) and at least twice
        as many jobs are due as executors are idle, each takes an equal share of up to `BATCH`,
        to run in turn. A job another live node owns is never part of a batch: its owner may be
        running it, and a lost race should cost one job's attempt, not a batch's.
        """
        heap, idle = self._heap, self._idle
        lead = self._lead_ms()
        if not (idle and heap and heap[0].run_at <= now + lead):
            return
        behind = heap[0].run_at <= now - BEHIND_MS
        limit = len(idle) * (BATCH if behind else 1)
        until = now if behind else now + lead  # jobs coming due start alone, on time
        due: list[DueJob] = []
        units: list[list[DueJob]] = []  # what each executor takes: one job alone, or a batch
        while (
            heap
            and heap[0].run_at <= until
            and len(due) + len(units) < limit
            and len(units) < len(idle)  # jobs that start alone fill the executors by themselves
        ):
            if heap[0].run_at > now + LEAD_MS and len(due) + len(units) >= len(idle) - 1:
                break  # only a job within LEAD_MS takes the last idle executor
            job = heapq.heappop(heap)
            if self._spread is not None and self._owner(job.job_id) != self._spread.node_id:
                units.append([job])
            else:
                due.append(job)
        share = min(BATCH, max(1, len(due) // max(len(idle) - len(units), 1)))
        units += [due[first : first + share] for first in range(0, len(due), share)]
        for unit in units[len(idle) :]:  # more than the idle executors take: they wait
            for job in unit:
                heapq.heappush(heap, job)
        for unit in units[: len(idle)]:
            for job in unit:
                self._queued.discard(job.job_id)
                self._retries.pop(job.job_id, None)
                self._running[job.job_id] = job
            early = len(unit) == 1 and unit[0].run_at > now
            # The executor reads it (an action: claims it) and waits, telling `BackingOff`.
            not_before = unit[0].run_at if early else 0
            idle.pop().tell(RunJob(tuple(job.job_id for job in unit), not_before))

    def _arm(self, now: int) -> None:
        if self._boundary is None:
            deadline = self._retry_at  # the last read failed
        elif self._heap:
            deadline = self._heap[0].run_at - self._lead_ms()
            if deadline <= now:
                return  # due but no idle executor: a JobsFinished will pump
        elif self._truncated:
            return  # the window's last rows are running: their JobsFinished will pump
        else:
            deadline = self._horizon_at
        if self._armed_at == deadline:
            return
        self._disarm()
        self._armed_at = deadline
        self._wakeup = wake_me_at(self._clock, deadline, self.actor_ref)

    def _lead_ms(self) -> int:
        """How early a job coming due alone is handed over now (see `Lead`)."""
        if self._lead is None or len(self._idle) < 2:  # noqa: PLR2004 - one stays for due jobs
            return LEAD_MS
        return self._lead.ms

    def _disarm(self) -> None:
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        self._armed_at = None

    def _settle(self, now: int) -> None:
        if not self._settling or self._boundary is None:
            return  # idle cannot be known while the due index cannot be read
        waits = [self._backing_off.get(job_id, now) for job_id in self._running]
        if any(until <= now for until in waits):
            return  # an executor is at work
        # A due job waits for an executor, unless every executor holds a job that waits for a
        # later instant (its due time within `LEAD_MS`, or a store outage's backoff): then it,
        # like them, can only start once the clock moves on, so nothing happens until then.
        if self._heap and self._heap[0].run_at <= now and (self._idle or not waits):
            return
        for reply in self._settling:
            reply.set_result(None)
        self._settling.clear()
