"""App: wires the store, registry, clock and actors; the scheduler API's front door."""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, Self, TypeVar, overload

import pykka
from eventsourcing.domain import BaseAggregate

from schedlog.actors.batch import BatchRunner
from schedlog.actors.commits import CommitPool
from schedlog.actors.executor import ExecutorActor
from schedlog.actors.follower import LogWatcher
from schedlog.actors.lead import Lead
from schedlog.actors.messages import JobsScheduled, Settle, StopDispatching
from schedlog.actors.node import make_node_id
from schedlog.actors.recovery import RecoverNow, RecoveryActor
from schedlog.actors.runner import DEFAULT_LEASE_MS
from schedlog.actors.timer import Spread, TimerActor
from schedlog.audit import DEFAULT_RETENTION_MS, Audit
from schedlog.clock import Clock, SystemClock
from schedlog.context import run_mutation_now
from schedlog.errors import (
    ConfigurationError,
    IdleTimeoutError,
    JobNotFoundError,
    RuntimeClosedError,
    StoreError,
)
from schedlog.events import FunctionKind
from schedlog.hosting import Hosting, refuse_inside_a_function
from schedlog.options import check_options, check_seconds
from schedlog.projections.queries import DueJob, history_entries, job_key
from schedlog.projections.reads import READ_VERSIONS
from schedlog.projections.sql import Dialect
from schedlog.registry import Registry
from schedlog.scheduler import AppScheduler
from schedlog.shutdown import ACTOR_STOP_S, stop_actor, stop_executors
from schedlog.store import ChangeListener, open_store
from schedlog.urls import parse_store_url

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType
    from uuid import UUID

    from eventsourcing.application import Repository


__all__ = ["App"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound="Callable[..., Any]")


_RUNNING: weakref.WeakSet[App] = weakref.WeakSet()
SPREAD_GRACE_MS = 2_000
MAX_COMMIT_THREADS = 16
"""Threads saving jobs' final commits: one per slot, up to 16 (one commit in flight each)."""


@atexit.register
def _stop_running_apps() -> None:
    """Stop, gracefully, every App still running at interpreter exit (actor threads are daemons)."""
    for app in list(_RUNNING):
        app.stop()


def _channel_of(recorder: object) -> str:
    """Return the NOTIFY channel of a PostgreSQL store's recorder.

    psycopg is imported here, not at the top: it takes ~0.1 s, which SQLite stores need not pay.
    """
    from schedlog.projections.pg_view import PgViewRecorder  # noqa: PLC0415

    assert isinstance(recorder, PgViewRecorder)  # noqa: S101 - the store's dialect says so
    return recorder.channel_name


class _Source:
    """The timer's view of the store: the due index and the log's position."""

    def __init__(self, app: App) -> None:
        self._app = app

    def due(self, before_ms: int, limit: int, after: tuple[int, int] | None = None) -> list[DueJob]:
        return self._app.scheduled_functions.due(before_ms, limit, after)

    def log_position(self) -> int:
        return self._app.store.recorder.max_notification_id() or 0

    def jobs_since(self, position: int) -> tuple[int, list[DueJob]]:
        return self._app.store.jobs_since(position)

    def live_nodes(self, now_ms: int) -> list[str]:
        return self._app.store.live_nodes(now_ms)


class App(Audit, Hosting):
    """A schedlog application: a store, registered functions, and the actor runtime.

    Args:
        store: `sqlite:///abs/path.db`, `sqlite://rel/path.db` or `memory://`; default
            `$SCHEDLOG_STORE`, else `./schedlog.db`.
        clock: where time comes from; `SystemClock()` by default, `FakeClock` in tests.
        max_concurrency: how many functions may run at once (S13).
        lease_ms: how long an action's claim lasts unless its node is seen alive (S19).
        retention_ms: how long finished jobs stay in the view (S28; default 7 days; None keeps
            them); the log, and so `history`, keeps everything.

    """

    def __init__(
        self,
        store: str | None = None,
        clock: Clock | None = None,
        max_concurrency: int = 8,
        lease_ms: int = DEFAULT_LEASE_MS,
        retention_ms: int | None = DEFAULT_RETENTION_MS,
    ) -> None:
        check_options(clock, max_concurrency, lease_ms, retention_ms)  # before the store opens
        self.store_config = parse_store_url(store)
        self.store, self.scheduled_functions = open_store(self.store_config)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.max_concurrency = max_concurrency
        self.lease_ms = lease_ms
        self.retention_ms = retention_ms
        # Several nodes share a PostgreSQL store: spread the work by job id (issue: scale-out).
        self.spread_grace_ms = SPREAD_GRACE_MS if self.store_config.postgres else None
        self.node_id = make_node_id()
        self._started = False  # once started, each start is a new node
        self.registry = Registry()
        self.scheduled_functions.name_of = lambda fn: self.registry.resolve(fn).name
        self.scheduler = AppScheduler(self)
        self._commits = CommitPool(min(max_concurrency, MAX_COMMIT_THREADS))
        self._lead = Lead()  # the executors report claims, the timer hands jobs over early
        self._runner = BatchRunner(self, commits=self._commits, lead=self._lead)
        self._lock = threading.Lock()
        self._timer: pykka.ActorRef[Any] | None = None
        self._executors: list[pykka.ActorRef[Any]] = []
        self._recovery: pykka.ActorRef[Any] | None = None
        self._store_failing_since: int | None = None
        self._listener: ChangeListener | None = None
        self._entered = 0  # `with app:` blocks open
        self._watcher: LogWatcher | None = None
        self._closed = False

    # Registration.

    @overload
    def mutation(self, fn: F, /) -> F: ...
    @overload
    def mutation(self, fn: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...
    def mutation(self, fn: F | None = None, /, *, name: str | None = None) -> Any:
        """Register a mutation: runs exactly once, its writes committed atomically (S14)."""
        return self._register(fn, FunctionKind.MUTATION, name)

    @overload
    def action(self, fn: F, /) -> F: ...
    @overload
    def action(self, fn: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...
    def action(self, fn: F | None = None, /, *, name: str | None = None) -> Any:
        """Register an action: runs at most once, may do I/O (S17)."""
        return self._register(fn, FunctionKind.ACTION, name)

    def _register(self, fn: F | None, kind: FunctionKind, name: str | None) -> Any:
        def register(f: F) -> F:
            self.registry.add(f, kind, name)
            return f

        return register if fn is None else register(fn)

    # The user's own aggregates and the log.

    @property
    def repository(self) -> Repository[UUID]:
        """The store's repository: `app.repository.get(id)` for the app's own aggregates."""
        return self.store.repository

    def save(self, *objs: Any, reads: Mapping[UUID, int] | None = None) -> None:
        """Save aggregates in one transaction; tell the timer of any new pending job.

        `reads` (a mutation's commit): the versions it read aggregates at; if one of them has
        moved on since, the save is a version conflict (`ConflictError`) and saves nothing.
        """
        for obj in objs:
            if not isinstance(obj, BaseAggregate):
                raise ConfigurationError(f"app.save takes eventsourcing aggregates, got {obj!r}")
        try:
            recordings = self.store.save(*objs, **({READ_VERSIONS: dict(reads)} if reads else {}))
        except StoreError as e:
            if self._closed:  # closed meanwhile, by another thread
                raise RuntimeClosedError("the App is closed") from e
            raise
        jobs = self.store.due_jobs_of(recordings)
        if jobs and self._timer is not None:
            try:
                self._timer.tell(JobsScheduled(tuple(jobs)))
            except pykka.ActorDeadError:
                log.exception("timer is dead; jobs saved but not started")

    def run_mutation(self, fn: Callable[..., Any] | str, /, *args: Any, **kwargs: Any) -> Any:
        """Run a registered mutation now, in one atomic commit; return what it returns.

        Everything it saves and schedules commits together or not at all (S14): the batch
        form, up to 1,000 jobs scheduled in one transaction (S10). `ctx.job_id` is None; a
        version conflict re-runs it (up to 100 times); an error it raises propagates.
        """
        return run_mutation_now(self, None, fn, args, kwargs)

    def history(self, job_id: str) -> list[dict[str, Any]]:
        """Return the job's events, oldest first, each with `type`, `time` and its data (S29)."""
        job = self.store.load_job(job_key(job_id, "job id"))
        if job is None:
            raise JobNotFoundError(str(job_id))
        return history_entries(self.store.events.get(job.id))

    # Running.

    def start(self) -> None:
        """Start the actor runtime: the timer, the executors and the log watcher.

        Each start after the first is a new node (a new `node_id`): claims the last run left
        in progress (a function that outlasted the stop, an outcome a store outage kept from
        being saved) then belong to a node that no longer beats, and recovery ends them once
        their lease runs out (S19), instead of this node's heartbeat keeping them alive.
        """
        with self._lock:
            if self._closed:
                raise RuntimeClosedError("the App is closed")
            if self._timer is not None:
                return
            if self._started:
                self.node_id = make_node_id()
            self._started = True
            self._runner.closing.clear()
            self._commits.start()
            recovery = RecoveryActor.start(self)
            spread = (
                None if self.spread_grace_ms is None else Spread(self.node_id, self.spread_grace_ms)
            )
            timer = TimerActor.start(self.clock, _Source(self), spread, self._lead)
            executors: list[pykka.ActorRef[Any]] = []
            try:
                executors.extend(
                    ExecutorActor.start(self._runner, timer) for _ in range(self.max_concurrency)
                )
                timer.proxy().add_executors(executors).get(timeout=10)
            except BaseException:
                for ref in [*executors, timer, recovery]:
                    ref.stop(block=False)
                raise
            self._executors = executors
            self._timer = timer
            self._recovery = recovery
            recorder = self.store.view_recorder
            if recorder.dialect is Dialect.POSTGRES:
                self._listener = ChangeListener(self.store_config, _channel_of(recorder))
            listener = self._listener
            self._watcher = LogWatcher(
                _Source(self),
                timer,
                wait=None if listener is None else listener.wait,
                relisten=None if listener is None else listener.close,
            )
            self._watcher.start()
            _RUNNING.add(self)

    def stop(self, timeout_s: float = 30) -> None:
        """Stop gracefully: no new starts; running functions get `timeout_s` to finish.

        One `timeout_s` for all of them together (and their final commits then get what is
        left of it, at least a second). A function still running then is left to its thread:
        its outcome is not saved, so an action is reported failed once its lease runs out and
        a mutation runs again (S19), as after a crash; unless this App is started again first,
        which saves the outcome when the function ends (unless recovery failed it meanwhile).
        """
        check_seconds(timeout_s)
        refuse_inside_a_function(self, "app.stop")
        with self._lock:
            timer, self._timer = self._timer, None
            executors, self._executors = self._executors, []
            watcher, self._watcher = self._watcher, None
            recovery, self._recovery = self._recovery, None
        if timer is None:
            return
        _RUNNING.discard(self)
        self._runner.closing.set()  # an executor backing off from a store outage gives up
        if watcher is not None:
            watcher.stop()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        try:
            timer.ask(StopDispatching(), timeout=ACTOR_STOP_S)
        except (pykka.ActorDeadError, pykka.Timeout):
            log.warning("timer did not acknowledge the stop")
        finished = stop_executors(executors, self._commits, timeout_s)
        for actor in (timer, recovery):
            if actor is not None:
                stop_actor(actor)
        if finished:  # nothing of ours runs any more: no lease of ours needs to live on
            try:
                self.store.forget_node(self.node_id)
            except Exception:
                log.warning("cannot remove this node's heartbeat", exc_info=True)

    def close(self) -> None:
        """Stop the runtime and close the store."""
        refuse_inside_a_function(self, "app.close")
        self.stop()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.store.close()

    def __enter__(self) -> Self:
        """Start the runtime; `with app:` blocks may nest (the outermost one stops it)."""
        self.start()
        with self._lock:
            self._entered += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._entered -= 1
            if self._entered > 0:
                return  # an inner block: the runtime stays up for the outer one
        self.stop()

    def wait_until_idle(self, timeout_s: float = 10) -> None:
        """Return once nothing due is waiting, nothing is running and the view is current.

        Nothing happens then until the clock moves on: jobs waiting for a later instant (a
        store outage's backoff, a job handed over up to `LEAD_MS` ahead of its due time) do not
        count, nor do due jobs waiting for the executors they hold.
        """
        check_seconds(timeout_s)
        refuse_inside_a_function(self, "app.wait_until_idle")
        timer = self._timer
        if timer is None:
            raise RuntimeClosedError("the runtime is not started: call app.start() first")
        self.check_accepting()
        recovery = self._recovery
        if recovery is not None:  # leases that ran out by now are work due now
            try:
                recovery.ask(RecoverNow(), timeout=timeout_s)
            except pykka.ActorDeadError:
                raise RuntimeClosedError("the runtime stopped while waiting for it") from None
            except pykka.Timeout:
                raise IdleTimeoutError(f"recovery did not answer within {timeout_s} s") from None
        reply: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            timer.tell(Settle(reply))
            reply.result(timeout=timeout_s)
        except pykka.ActorDeadError:
            raise RuntimeClosedError("the runtime stopped while waiting for it") from None
        except concurrent.futures.TimeoutError:
            raise IdleTimeoutError(f"the runtime was not idle within {timeout_s} s") from None
        if self._timer is not timer:  # stopped meanwhile: the timer let its waiters go
            raise RuntimeClosedError("the runtime stopped while waiting for it")
        self.check_accepting()
        # Jobs that finished while settling may be due for retention at this very instant.
        self.apply_retention(self.clock.now_ms())
