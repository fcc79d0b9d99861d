"""The event store: an eventsourcing application on SQLite or PostgreSQL with its view (front door).

`open_store` opens what a parsed store URL (`urls.py`) names; `JobStore` saves and reads jobs,
follows the log and keeps the nodes' heartbeats; `ChangeListener` waits for PostgreSQL's NOTIFY.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import BaseAggregate
from eventsourcing.persistence import (
    IntegrityError,
    PersistenceError,
    StoredEvent,
    Transcoder,
    TranscodingNotRegisteredError,
)
from eventsourcing.utils import TopicError, get_topic

from schedlog.errors import ConfigurationError, ConflictError, StoreError
from schedlog.events import JobId, ScheduledFunction
from schedlog.projections.queries import DueJob, ScheduledFunctions
from schedlog.projections.reads import READ_CONFLICT
from schedlog.projections.sql import Dialect, store_open
from schedlog.projections.sqlite_store import SYNCHRONOUS_KEY
from schedlog.projections.transcoder import OrjsonTranscoder
from schedlog.projections.view import JOB_TOPIC_PREFIX, TABLE, VIEW_EVENTS, ViewKeeper

if TYPE_CHECKING:
    from collections.abc import Sequence

    from schedlog.projections.pg_view import PgViewRecorder  # imports psycopg: PostgreSQL only
    from schedlog.projections.sql import Db
    from schedlog.projections.sqlite_view import ViewRecorder
    from schedlog.urls import StoreConfig

__all__ = ["ChangeListener", "JobStore", "open_store"]

_EVENTS_KEYS = ("stored_events.originator_id", "schedlog_events_pkey", READ_CONFLICT)
"""How SQLite and PostgreSQL name the events table's key in a version conflict's message (and
how a save refused by the versions its mutation read says so)."""
_DUE_TOPICS = sorted(
    get_topic(cls) for cls in (ScheduledFunction.Scheduled, ScheduledFunction.Retried)
)
"""The topics of the events that make a job due: what following the log reads."""

log = logging.getLogger(__name__)

NODES_TABLE = "schedlog_nodes_v1"
_NODES_DDL = (
    f"CREATE TABLE IF NOT EXISTS {NODES_TABLE} ("
    "node_id TEXT PRIMARY KEY, heartbeat_ms BIGINT NOT NULL, lease_ms BIGINT NOT NULL)"
)


class _Collected(ProcessingEvent[UUID]):
    """Collects a save's events; aggregates take a plain class check, not a Protocol one.

    The library checks each object against two runtime Protocols: about 30 us per aggregate,
    a fifth of the cost of scheduling a job in a batch.
    """

    def collect_events(self, *objs: Any, **kwargs: Any) -> None:
        others = []
        for obj in objs:
            if isinstance(obj, BaseAggregate):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            else:
                others.append(obj)
        super().collect_events(*others, **kwargs)


def _project(aggregate: Any, events: Any) -> Any:
    """Fold `events` into `aggregate`: the library's projector without its Protocol check."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class JobStore(Application[UUID]):
    """The event store of jobs and of the user's own aggregates, with the view kept inline."""

    name = "schedlog"

    def construct_transcoder(self) -> Transcoder:
        """Return the library's JSON transcoder and transcodings, run by orjson where it can."""
        transcoder = OrjsonTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        """Save atomically; the jobs' events update the view in the same transaction.

        Raises `ConflictError` on a version conflict, `StoreError` on other store errors.
        """
        view_events = [
            e for o in objs if isinstance(o, ScheduledFunction) for e in o.pending_events
        ]
        with store_open(self.db):
            try:
                # Application.save's steps, with the events collected by `_Collected` (cheaper).
                processing_event = _Collected()
                processing_event.collect_events(*objs, **{VIEW_EVENTS: view_events}, **kwargs)
                recordings = self._record(processing_event)
                self._take_snapshots(processing_event)
                self._notify(recordings)
            except IntegrityError as e:
                if any(
                    key in str(e) for key in _EVENTS_KEYS
                ):  # the (originator_id, version) key: someone moved first
                    raise ConflictError(f"version conflict: {e}") from e
                raise StoreError(f"store constraint failed: {e}") from e
            except PersistenceError as e:
                raise StoreError(f"store error: {e}") from e
            except TranscodingNotRegisteredError as e:  # an aggregate's value, not the store
                raise ConfigurationError(f"cannot save an aggregate's event: {e}") from e
        return recordings

    @property
    def view_recorder(self) -> ViewRecorder | PgViewRecorder:
        """The recorder, which also keeps the view."""
        recorder = self.recorder
        assert isinstance(recorder, ViewKeeper)  # noqa: S101 - open_store
        return cast("ViewRecorder | PgViewRecorder", recorder)  # PgViewRecorder: not imported

    @functools.cached_property
    def db(self) -> Db:
        """The store's database, for the read side's own tables (made once: every save asks)."""
        return self.view_recorder.db

    def load_job(self, job_id: str) -> ScheduledFunction | None:
        """Return the job `job_id`, or None if no job has that id."""
        try:
            key = UUID(job_id)
        except (ValueError, TypeError, AttributeError):
            return None
        try:
            with store_open(self.db):
                job: object = self.repository.get(key, projector_func=_project)
        except AggregateNotFoundError:
            return None
        except TopicError:  # an aggregate of the user's, of a class not imported here?
            first = self.recorder.select_events(key, limit=1)
            if first and first[0].topic.startswith(JOB_TOPIC_PREFIX):
                raise  # a job's own event that cannot be read: not "no such job"
            return None
        return job if isinstance(job, ScheduledFunction) else None

    def load_jobs(self, job_ids: Sequence[str]) -> dict[str, ScheduledFunction]:
        """Return the jobs among `job_ids` that exist, read in one query (a batch's jobs)."""
        sqlite = self.db.dialect is Dialect.SQLITE
        keys: dict[object, UUID] = {}  # as the query takes and returns it -> the job's id
        for job_id in job_ids:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                key = JobId(UUID(job_id).int)  # keeps its text for the job's events and row
                keys[key.hex if sqlite else key] = key
        if not keys:
            return {}
        marks = ", ".join("?" * len(keys))
        with self.db.transaction(commit=False) as cur:
            rows = cur.tuples(
                "SELECT originator_id, originator_version, topic, state "  # noqa: S608
                f"FROM {self.db.events_table} WHERE originator_id IN ({marks}) "
                "ORDER BY originator_id, originator_version",
                list(keys),
            )
        jobs: dict[str, ScheduledFunction] = {}
        for key, group in itertools.groupby(rows, key=lambda row: row[0]):
            oid = keys[key]  # the rows are those of `keys`, as the query took them
            events = [
                self.mapper.to_domain_event(StoredEvent(oid, v, t, bytes(s)))
                for _, v, t, s in group
            ]
            job = _project(None, events)
            if isinstance(job, ScheduledFunction):
                jobs[job.job_id] = job
        return jobs

    def version_of(self, job_id: str) -> int | None:
        """Return the version of the job's last event (one indexed read), or None if none."""
        with store_open(self.db):
            last = self.recorder.select_events(UUID(job_id), desc=True, limit=1)
        return last[0].originator_version if last else None

    def jobs_since(self, position: int, limit: int = 1000) -> tuple[int, list[DueJob]]:
        """Return the jobs made due by events after `position` (any writer) and the new position."""
        last = self.recorder.max_notification_id() or 0
        if last <= position:
            return position, []
        # Only the events that make a job due are read (most of the log is Started/Completed).
        notifications = self.recorder.select_notifications(
            start=position, limit=limit, stop=last, topics=_DUE_TOPICS, inclusive_of_start=False
        )
        jobs = []
        for n in notifications:
            try:
                event: object = self.mapper.to_domain_event(n)
            except Exception:  # one undecodable event must not stop the runtime
                log.exception("cannot decode event %d (%s); skipped", n.id, n.topic)
                continue
            if isinstance(event, ScheduledFunction.Scheduled):
                jobs.append(DueJob(event.scheduled_time_ms, n.id, str(event.originator_id)))
            elif isinstance(event, ScheduledFunction.Retried):
                jobs.append(DueJob(event.next_run_ms, n.id, str(event.originator_id)))
        return (notifications[-1].id if len(notifications) == limit else last), jobs

    # Node liveness (S19): one row per runtime, its heartbeat renewing all its actions' leases.
    # It is runtime state, not job state, so it is the one table updated in place.

    def heartbeat(self, node_id: str, now_ms: int, lease_ms: int) -> None:
        """Record that `node_id` is alive at `now_ms`; its leases hold until now + lease_ms."""
        with self.db.transaction(commit=True) as c:
            c.execute(
                f"INSERT INTO {NODES_TABLE} (node_id, heartbeat_ms, lease_ms) VALUES (?, ?, ?) "  # noqa: S608
                "ON CONFLICT (node_id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms, "
                "lease_ms = excluded.lease_ms "
                f"WHERE excluded.heartbeat_ms > {NODES_TABLE}.heartbeat_ms",
                (node_id, now_ms, lease_ms),
            )

    def forget_node(self, node_id: str) -> None:
        """Remove a node that stopped cleanly (nothing of it is running any more)."""
        with self.db.transaction(commit=True) as c:
            c.execute(f"DELETE FROM {NODES_TABLE} WHERE node_id = ?", (node_id,))  # noqa: S608

    def live_nodes(self, now_ms: int) -> list[str]:
        """Return the nodes whose heartbeat still holds at `now_ms`."""
        with self.db.transaction(commit=False) as c:
            c.execute(
                f"SELECT node_id FROM {NODES_TABLE} WHERE heartbeat_ms + lease_ms >= ?",  # noqa: S608
                (now_ms,),
            )
            return [row["node_id"] for row in c.fetchall()]

    def expired_claims(self, now_ms: int) -> list[str]:
        """Return running jobs whose lease ran out and whose node has not been seen since."""
        with self.db.transaction(commit=False) as c:
            c.execute(
                f"SELECT v.id FROM {TABLE} AS v LEFT JOIN {NODES_TABLE} AS n "  # noqa: S608
                "ON n.node_id = v.node_id WHERE v.state = 'inProgress' "
                "AND v.lease_until IS NOT NULL AND v.lease_until < ? "
                "AND (n.node_id IS NULL OR n.heartbeat_ms + n.lease_ms < ?) "
                "ORDER BY v.lease_until LIMIT 1000",
                (now_ms, now_ms),
            )
            return [row["id"] for row in c.fetchall()]

    def due_jobs_of(self, recordings: Any) -> list[DueJob]:
        """Return the pending jobs that a save's recordings created, for the timer."""
        jobs = []
        for rec in recordings:
            event: object = rec.domain_event
            if isinstance(event, ScheduledFunction.Scheduled):
                jobs.append(
                    DueJob(event.scheduled_time_ms, rec.notification.id, str(event.originator_id))
                )
        return jobs


def open_store(config: StoreConfig) -> tuple[JobStore, ScheduledFunctions]:
    """Open (creating if need be) the store and its view; fold in any events it lacks."""
    prefix = JobStore.name.upper() + "_"
    if config.postgres is not None:
        _create_schema(config)
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "APPLICATION_RECORDER_TOPIC": "schedlog.projections.pg_view:PgViewRecorder",
            "CREATE_TABLE": "y",
            **config.postgres,
        }
    else:
        env = {
            "PERSISTENCE_MODULE": "schedlog.projections.sqlite_store:SQLiteStoreFactory",
            "SQLITE_DBNAME": config.sqlite_dbname,
            "SQLITE_LOCK_TIMEOUT": str(config.lock_timeout_s),
            SYNCHRONOUS_KEY: config.synchronous,
            "APPLICATION_RECORDER_TOPIC": "schedlog.projections.sqlite_view:ViewRecorder",
            "CREATE_TABLE": "y",
        }
    env.update({prefix + k: v for k, v in list(env.items())})
    try:
        store = JobStore(env=env)
    except (PersistenceError, OSError) as e:
        raise StoreError(f"cannot open store {config.safe_url!r}: {e}") from e
    recorder = store.view_recorder
    recorder.decode = store.mapper.to_domain_event
    with recorder.db.transaction(commit=True) as c:
        if config.postgres is not None:  # nodes opening a fresh schema at once: one creates
            c.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (_ddl_lock(config),))
        c.execute(_NODES_DDL)
    recorder.catch_up()
    return store, ScheduledFunctions(recorder.db)


def _ddl_lock(config: StoreConfig) -> str:
    """Return the advisory lock's key under which a PostgreSQL schema's tables are created."""
    return f"schedlog-ddl:{(config.postgres or {}).get('POSTGRES_SCHEMA', 'public')}"


def _connect(settings: dict[str, str]) -> Any:
    """Open one autocommit connection outside the pool, with the store's settings."""
    import psycopg  # noqa: PLC0415 - only PostgreSQL stores need the driver

    return psycopg.connect(
        dbname=settings["POSTGRES_DBNAME"],
        host=settings["POSTGRES_HOST"],
        port=int(settings["POSTGRES_PORT"]),
        user=settings["POSTGRES_USER"],
        password=settings["POSTGRES_PASSWORD"],
        connect_timeout=int(settings["POSTGRES_CONNECT_TIMEOUT"]),
        autocommit=True,
    )


def _create_schema(config: StoreConfig) -> None:
    """Create the store's PostgreSQL schema if it is missing (the library expects it)."""
    import psycopg  # noqa: PLC0415 - only PostgreSQL stores need the driver

    settings = config.postgres
    assert settings is not None  # noqa: S101
    try:
        schema = settings["POSTGRES_SCHEMA"]
        with _connect(settings) as conn, conn.transaction():
            # Nodes starting together would race on the catalog; the first creates, the rest wait.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_ddl_lock(config),))
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    except psycopg.Error as e:
        raise StoreError(f"cannot open store {config.safe_url!r}: {e}") from e


def postgres_store_exists(config: StoreConfig) -> bool:
    """Tell whether the store's PostgreSQL schema holds a schedlog log (read only, no DDL)."""
    import psycopg  # noqa: PLC0415 - only PostgreSQL stores need the driver

    settings = config.postgres
    assert settings is not None  # noqa: S101
    try:
        with _connect(settings) as conn:
            row = conn.execute(
                "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))",
                (settings["POSTGRES_SCHEMA"], TABLE),  # the view: every schedlog store has it
            ).fetchone()
    except psycopg.Error as e:
        raise StoreError(f"cannot open store {config.safe_url!r}: {e}") from e
    return row is not None and row[0] is not None


def sqlite_store_exists(config: StoreConfig) -> bool:
    """Tell whether the store's SQLite file holds a schedlog log (read only, no DDL).

    Raises `StoreError` if the file is no SQLite database.
    """
    try:
        uri = Path(config.sqlite_dbname).resolve().as_uri()
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open store {config.safe_url!r}: {e}") from e
    try:
        row = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
        ).fetchone()
    except sqlite3.Error as e:
        raise StoreError(f"cannot open store {config.safe_url!r}: {e}") from e
    finally:
        conn.close()
    return row is not None


class ChangeListener:
    """Waits for PostgreSQL's NOTIFY on the events table's channel (sent by every insert).

    It keeps one connection of its own, outside the pool, open while the runtime runs; a broken
    connection is opened again on the next wait.
    """

    def __init__(self, config: StoreConfig, channel: str) -> None:
        self._settings = config.postgres or {}
        self._channel = channel
        self._conn: Any = None

    def wait(self, timeout_s: float) -> bool:
        """Return once a notification arrives (True), or after `timeout_s` (False).

        A fresh connection returns True at once: notifications before its LISTEN were missed.
        """
        import psycopg  # noqa: PLC0415 - only PostgreSQL stores need the driver

        if self._conn is None or self._conn.closed:
            self._conn = _connect(self._settings)
            self._conn.execute(f'LISTEN "{self._channel}"')
            return True
        try:
            return any(True for _ in self._conn.notifies(timeout=timeout_s, stop_after=1))
        except psycopg.Error:
            self.close()
            raise

    def close(self) -> None:
        """Close the listening connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
