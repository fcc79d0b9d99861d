"""Scheduling through the App: due times, arguments, errors, durability (S1-S12, S30)."""

from __future__ import annotations

import datetime as dt
import functools
import re
import uuid
from typing import Any

import pytest

from schedlog import (
    App,
    ArgsMismatchError,
    ArgsNotSerializableError,
    ConfigurationError,
    RuntimeClosedError,
    SchedlogError,
    ScheduleValidationError,
    StoreError,
    UnknownFunctionError,
)
from schedlog.actors.lead import LEAD_MS
from schedlog.testing import FakeClock
from tests.integration.helpers import Account, all_docs, log_position, state, types

T0 = 1_800_000_000_000


def register_noop(app: App) -> None:
    @app.action(name="jobs:noop")
    def noop(ctx, *args, **kwargs) -> None:
        del ctx, args, kwargs


def test_run_after_fires_exactly_at_due_time_s4(app: App, clock: FakeClock) -> None:
    ran: list[int] = []

    @app.action(name="jobs:stamp")
    def stamp(ctx, email: str) -> None:
        ran.append(ctx.now_ms)

    app.start()
    job = app.scheduler.run_after(5_000, "jobs:stamp", "a@example.com")
    clock.advance(5_000 - LEAD_MS - 1)
    app.wait_until_idle()
    assert state(app, job) == "pending"
    clock.advance(LEAD_MS)  # 1 ms early: claimed ahead at most (inProgress), not run
    app.wait_until_idle()
    assert ran == []
    clock.advance(1)
    app.wait_until_idle()
    assert ran == [T0 + 5_000]
    doc = app.scheduled_functions.get(job)
    assert doc is not None
    assert doc["state"] == {"kind": "success"}
    assert doc["completedTime"] == float(T0 + 5_000)


def test_document_has_convex_fields_s1_s2_s3(app: App, clock: FakeClock) -> None:
    register_noop(app)
    job = app.scheduler.run_after(250, "jobs:noop", "x", 2, flag=True)
    doc = app.scheduled_functions.get(job)
    assert doc == {
        "_id": job,
        "_creationTime": float(T0),
        "name": "jobs:noop",
        "args": ["x", 2],
        "kwargs": {"flag": True},
        "scheduledTime": float(T0 + 250),
        "state": {"kind": "pending"},
    }
    assert isinstance(job, str)
    other = app.scheduler.run_after(250, "jobs:noop")
    assert other != job  # S3: unique
    app.start()
    clock.advance(250)
    app.wait_until_idle()
    done = app.scheduled_functions.get(job)
    assert done is not None
    assert done["scheduledTime"] == float(T0 + 250)  # S2: never rewritten
    assert done["completedTime"] == float(T0 + 250)


def test_run_at_datetime_and_past_times_s5(app: App, clock: FakeClock) -> None:
    register_noop(app)
    when = dt.datetime.fromtimestamp((T0 + 60_000) / 1000, tz=dt.UTC)
    job = app.scheduler.run_at(when, "jobs:noop")
    past = app.scheduler.run_at(T0 - 10_000, "jobs:noop")
    assert app.scheduled_functions.get(job)["scheduledTime"] == float(T0 + 60_000)  # type: ignore[index]
    app.start()
    app.wait_until_idle()
    assert state(app, past) == "success"  # a past time means due now
    assert app.scheduled_functions.get(past)["scheduledTime"] == float(T0 - 10_000)  # type: ignore[index]
    assert state(app, job) == "pending"
    clock.advance(60_000)
    app.wait_until_idle()
    assert state(app, job) == "success"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.run_after(-1, "jobs:noop"), "delay_ms must be >= 0"),
        (lambda s: s.run_after(float("nan"), "jobs:noop"), "must be finite"),
        (lambda s: s.run_after(True, "jobs:noop"), "delay_ms must be an int"),
        (lambda s: s.run_after("5", "jobs:noop"), "delay_ms must be an int"),
        (lambda s: s.run_at(dt.datetime(2027, 1, 1), "jobs:noop"), "naive"),
        (
            lambda s: s.run_after(6 * 366 * 86_400_000, "jobs:noop"),
            "more than 5 years in the future",
        ),
        (
            lambda s: s.run_at(T0 - 6 * 366 * 86_400_000, "jobs:noop"),
            "more than 5 years in the past",
        ),
        (lambda s: s.run_after(0, "jobs:missing"), "unknown function 'jobs:missing'"),
        (lambda s: s.run_after(0, "jobs:noop", {1, 2}), "argument 1 (args[0]) is a set"),
        (lambda s: s.run_after(0, "jobs:noop", x=object()), "keyword argument 'x'"),
        (lambda s: s.run_after(0, "jobs:noop", "x" * (17 * 1024 * 1024)), "16 MiB"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written_s4_to_s10(app: App, call, message) -> None:
    register_noop(app)
    before = log_position(app)
    with pytest.raises(SchedlogError, match=re.escape(message)):
        call(app.scheduler)
    assert log_position(app) == before
    assert all_docs(app) == []


def test_error_classes_s8_s9(app: App) -> None:
    register_noop(app)
    with pytest.raises(UnknownFunctionError) as unknown:
        app.scheduler.run_after(0, "nope:fn")
    assert isinstance(unknown.value, LookupError)
    with pytest.raises(ArgsNotSerializableError) as bad:
        app.scheduler.run_after(0, "jobs:noop", 1, (1, 2))
    assert isinstance(bad.value, TypeError)
    assert isinstance(bad.value, ScheduleValidationError)
    assert "argument 2 (args[1]) is a tuple" in str(bad.value)

    def never_registered(ctx) -> None:
        del ctx

    with pytest.raises(UnknownFunctionError, match="never_registered"):
        app.scheduler.run_after(0, never_registered)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing a required argument: 'to'"),
        (("ann", "bob"), {}, "too many positional arguments"),
        (("ann",), {"bcc": "x"}, "unexpected keyword argument 'bcc'"),
        (("ann",), {"ctx": "x"}, "multiple values for argument 'ctx'"),
        (("ann",), {"to": "bob"}, "multiple values for argument 'to'"),
    ],
)
def test_arguments_that_do_not_fit_the_function_are_refused_s8_s9(
    app: App, args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    """Accepted, such a job could only fail when it ran (a kwarg `ctx` always did)."""

    @app.action(name="io:send")
    def send(ctx, to: str, *, cc: str | None = None) -> None:
        del ctx, to, cc

    before = log_position(app)
    with pytest.raises(ArgsMismatchError, match=re.escape(message)) as refused:
        app.scheduler.run_after(0, send, *args, **kwargs)
    assert "'io:send' cannot be called with these arguments" in str(refused.value)
    assert isinstance(refused.value, TypeError)
    assert log_position(app) == before
    app.scheduler.run_after(0, send, "ann", cc="bob")  # what fits is taken


def test_arguments_round_trip_s9(app: App, clock: FakeClock) -> None:
    seen: list[object] = []

    @app.mutation(name="jobs:echo")
    def echo(ctx, *args, **kwargs) -> None:
        seen.append((args, kwargs))

    key = uuid.uuid4()
    when = dt.datetime(2027, 5, 1, 12, 30, tzinfo=dt.UTC)
    args = ["s", 1, 2.5, True, None, [1, {"a": [key]}], {"when": when}]
    job = app.scheduler.run_after(0, echo, *args, at=when, ids=[key])
    doc = app.scheduled_functions.get(job)
    assert doc is not None
    assert doc["args"][5] == [1, {"a": [str(key)]}]  # a UUID shows as a string in the view
    assert doc["kwargs"]["at"] == when.isoformat()
    app.start()
    app.wait_until_idle()
    assert seen == [(tuple(args), {"at": when, "ids": [key]})]
    got_args, got_kwargs = seen[0]  # type: ignore[misc]
    assert isinstance(got_args[5][1]["a"][0], uuid.UUID)
    assert isinstance(got_kwargs["at"], dt.datetime)


def test_a_datetime_whose_offset_has_seconds_shows_its_own_instant_s9(app: App) -> None:
    """orjson rounds offsets to minutes: the view showed +00:20, 28 s off the argument."""
    amsterdam_1890 = dt.timezone(dt.timedelta(minutes=19, seconds=32))
    when = dt.datetime(1890, 6, 1, 12, tzinfo=amsterdam_1890)
    register_noop(app)
    job = app.scheduler.run_after(0, "jobs:noop", when, at=when)
    doc = app.scheduled_functions.get(job)
    assert doc is not None
    assert doc["args"] == ["1890-06-01T12:00:00+00:19:32"]
    assert dt.datetime.fromisoformat(doc["kwargs"]["at"]) == when
    app.replay()
    again = app.scheduled_functions.get(job)
    assert again == doc


def test_arguments_are_copied_at_scheduling_s9(app: App) -> None:
    register_noop(app)
    payload = {"items": [1, 2]}
    job = app.scheduler.run_after(0, "jobs:noop", payload)
    payload["items"].append(3)
    assert app.scheduled_functions.get(job)["args"] == [{"items": [1, 2]}]  # type: ignore[index]


def test_durable_when_the_call_returns_s11_s30(clock: FakeClock, store_url: str) -> None:
    first = App(store=store_url, clock=clock)
    register_noop(first)
    job = first.scheduler.run_after(1_000, "jobs:noop")
    assert state(first, job) == "pending"  # S30: read-your-writes, runtime not started
    first.close()
    second = App(store=store_url, clock=clock)
    register_noop(second)
    try:
        assert state(second, job) == "pending"
        assert types(second, job) == ["Scheduled"]
        second.start()
        clock.advance(1_000)
        second.wait_until_idle()
        assert state(second, job) == "success"
    finally:
        second.close()


def test_function_missing_when_it_runs_fails_s8(clock: FakeClock, store_url: str) -> None:
    scheduling = App(store=store_url, clock=clock)
    register_noop(scheduling)
    job = scheduling.scheduler.run_after(0, "jobs:noop")
    scheduling.close()
    worker = App(store=store_url, clock=clock)  # jobs:noop is not registered here
    try:
        worker.start()
        worker.wait_until_idle()
        doc = worker.scheduled_functions.get(job)
        assert doc is not None
        assert doc["state"]["kind"] == "failed"
        assert "unknown function 'jobs:noop'" in doc["state"]["error"]
    finally:
        worker.close()


async def _coroutine(ctx) -> None:
    del ctx


def _generator(ctx):
    del ctx
    yield 1


async def _async_generator(ctx):
    del ctx
    yield 1


class _AsyncCall:
    async def __call__(self, ctx) -> None:
        del ctx


@pytest.mark.parametrize("fn", [_coroutine, _generator, _async_generator, _AsyncCall()])
@pytest.mark.parametrize("kind", ["action", "mutation"])
def test_async_and_generator_functions_are_refused_at_registration(
    app: App, fn: object, kind: str
) -> None:
    """Calling one only makes a coroutine or generator: the job ended `success` though its
    body never ran (and a mutation's writes and children were never made)."""
    with pytest.raises(ConfigurationError, match="async or generator function"):
        getattr(app, kind)(name="jobs:never")(fn)
    assert app.registry.get("jobs:never") is None


def test_a_function_that_returns_a_coroutine_fails_its_job_saying_why(app: App) -> None:
    """Registration cannot tell a wrapper that returns one; nothing would await it. A
    generator returned by a function whose body ran is a value like any other."""

    def wrapper(ctx) -> object:
        return _coroutine(ctx)

    def gives_a_generator(ctx, items: list[int]) -> object:
        del ctx
        return (i for i in items)

    app.action(name="io:async")(wrapper)
    app.mutation(name="jobs:async")(wrapper)
    app.mutation(name="jobs:gen")(gives_a_generator)
    jobs = [app.scheduler.run_after(0, name) for name in ("io:async", "jobs:async")]
    fine = app.scheduler.run_after(0, "jobs:gen", [1, 2])
    app.start()
    app.wait_until_idle()
    for job in jobs:
        doc = app.scheduled_functions.get(job)
        assert doc is not None
        assert doc["state"]["kind"] == "failed"
        assert "returned a coroutine, which nothing awaits" in doc["state"]["error"]
    assert state(app, fine) == "success"
    with pytest.raises(ConfigurationError, match="returned a coroutine"):
        app.run_mutation("jobs:async")
    assert list(app.run_mutation("jobs:gen", [3])) == [3]


def test_a_wrapper_is_checked_by_its_own_parameters_not_the_wrapped_ones_s8(app: App) -> None:
    """`functools.wraps` makes `inspect.signature` show the wrapped function's parameters: a
    decorator that supplies one of them was refused (`missing a required argument`)."""

    def injects_db(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(ctx, *args: Any, **kwargs: Any) -> Any:
            return fn(ctx, "the db", *args, **kwargs)

        return wrapper

    seen: list[tuple[str, int]] = []

    @app.action(name="jobs:injected")
    @injects_db
    def injected(ctx, db: str, x: int) -> None:
        del ctx
        seen.append((db, x))

    job = app.scheduler.run_after(0, injected, 1)
    app.start()
    app.wait_until_idle()
    assert state(app, job) == "success"
    assert seen == [("the db", 1)]


def test_a_mutations_ctx_kept_past_its_return_refuses_to_stage_s14(app: App) -> None:
    """What it staged then was dropped without a word: `run_after` returned the id of a job
    that never existed."""
    kept: list[Any] = []
    register_noop(app)

    @app.mutation(name="jobs:keeps")
    def keeps(ctx) -> None:
        kept.append(ctx)

    job = app.scheduler.run_after(0, keeps)
    app.run_mutation(keeps)
    app.start()
    app.wait_until_idle()
    assert state(app, job) == "success"
    before = log_position(app)
    for ctx in kept:
        with pytest.raises(RuntimeClosedError, match=r"'jobs:keeps' .* has returned"):
            ctx.scheduler.run_after(0, "jobs:noop")
        with pytest.raises(RuntimeClosedError, match="has returned"):
            ctx.scheduler.cancel(job)
        with pytest.raises(RuntimeClosedError, match="has returned"):
            ctx.save(Account("ann"))
    assert len(kept) == 2
    assert log_position(app) == before


def test_registration_names_and_conflicts(app: App) -> None:
    @app.mutation
    def plain(ctx) -> None:
        del ctx

    assert app.registry.resolve(plain).name.endswith(
        ":test_registration_names_and_conflicts.<locals>.plain"
    )

    @app.action(name="billing:charge")
    def charge(ctx) -> None:
        del ctx

    assert app.registry.resolve("billing:charge").fn is charge
    with pytest.raises(SchedlogError, match="already registered"):

        @app.mutation(name="billing:charge")
        def other(ctx) -> None:
            del ctx


def test_callables_without_a_name_of_their_own_need_one(app: App) -> None:
    def add(ctx, a: int, b: int) -> None:
        del ctx, a, b

    class Charge:
        __hash__ = None  # type: ignore[assignment] # unhashable: found by its name only

        def __call__(self, ctx) -> None:
            del ctx

    with pytest.raises(SchedlogError, match=r"has no name of its own.*name=") as partial:
        app.mutation(functools.partial(add, 1))
    assert "functools.partial" in str(partial.value)
    with pytest.raises(SchedlogError, match="has no name of its own"):
        app.action(Charge())
    app.mutation(functools.partial(add, 1), name="jobs:add_one")
    app.action(Charge(), name="jobs:charge")
    assert app.registry.resolve("jobs:add_one").name == "jobs:add_one"
    assert app.registry.resolve("jobs:charge").name == "jobs:charge"


def test_wait_until_idle_needs_a_started_runtime(app: App) -> None:
    with pytest.raises(SchedlogError, match="not started"):
        app.wait_until_idle()


@pytest.mark.parametrize("kind", ["action", "mutation"])
@pytest.mark.parametrize("call", ["stop", "close", "wait_until_idle"])
def test_a_function_that_stops_or_waits_for_the_runtime_is_refused(
    app: App, kind: str, call: str
) -> None:
    """`app.stop()` inside a function waited out its whole timeout for that function itself,
    then left it in progress; `wait_until_idle` there could never see the runtime idle."""
    waits = {} if call == "close" else {"timeout_s": 600}
    getattr(app, kind)(name="jobs:inside")(lambda _ctx: getattr(app, call)(**waits))
    job = app.scheduler.run_after(0, "jobs:inside")
    app.start()
    app.wait_until_idle()
    doc = app.scheduled_functions.get(job)
    assert doc is not None
    assert doc["state"]["kind"] == "failed"
    assert (
        f"app.{call} cannot be called from inside a scheduled function (job {job})"
        in (doc["state"]["error"])
    )
    register_noop(app)  # the runtime still runs
    after = app.scheduler.run_after(0, "jobs:noop")
    app.wait_until_idle()
    assert state(app, after) == "success"


def test_a_function_may_drive_another_app(app: App, clock: FakeClock, tmp_path: Any) -> None:
    """Only the App running the function is refused: another one's stop was refused too, and
    its runtime left running."""
    other = App(store=f"sqlite://{tmp_path / 'other.db'}", clock=clock)
    register_noop(other)
    done: list[str] = []

    def drives(ctx) -> None:
        del ctx
        with other:
            other.scheduler.run_after(0, "jobs:noop")
            other.wait_until_idle()
        done.append("ok")

    app.action(name="jobs:drives")(drives)
    job = app.scheduler.run_after(0, "jobs:drives")
    app.start()
    app.wait_until_idle()
    assert state(app, job) == "success"
    assert done == ["ok"]
    other.close()


def test_a_job_whose_event_cannot_be_read_is_an_error_not_a_missing_job(tmp_path: Any) -> None:
    """The id of a user's aggregate of a class not imported here is no job's (the CLI's case);
    a job's own event whose topic does not resolve is not hidden as "no such job"."""
    import sqlite3

    from eventsourcing.utils import TopicError

    path = tmp_path / "jobs.db"
    app = App(store=f"sqlite://{path}")
    try:
        broken, foreign = uuid.uuid4(), uuid.uuid4()
        with sqlite3.connect(path) as db:
            for key, topic in (
                (broken, "schedlog.events.function:ScheduledFunction.Gone"),
                (foreign, "someone.elses.module:Ledger.Created"),
            ):
                db.execute(
                    "INSERT INTO stored_events (originator_id, originator_version, topic, state) "
                    "VALUES (?, 1, ?, ?)",
                    (key.hex, topic, b"{}"),
                )
        assert app.store.load_job(str(foreign)) is None
        with pytest.raises(TopicError):
            app.store.load_job(str(broken))
    finally:
        app.close()


def test_nested_with_blocks_keep_the_runtime_up_until_the_outermost_ends(app: App) -> None:
    register_noop(app)
    with app:
        with app:
            pass
        job = app.scheduler.run_after(0, "jobs:noop")
        app.wait_until_idle()  # raised "not started": the inner block had stopped it
        assert state(app, job) == "success"
    with pytest.raises(RuntimeClosedError, match="not started"):
        app.wait_until_idle()


def test_a_timeout_too_long_for_python_s_waits_is_refused_by_name(app: App) -> None:
    """1e12 s passed the check, then raised a bare OverflowError, leaving stop half done."""
    from schedlog.options import MAX_TIMEOUT_S

    app.start()
    for call in (app.wait_until_idle, app.stop):
        with pytest.raises(ConfigurationError, match="timeout_s must be at most"):
            call(timeout_s=1e12)
    app.wait_until_idle(timeout_s=MAX_TIMEOUT_S)
    app.stop(timeout_s=MAX_TIMEOUT_S)
    assert MAX_TIMEOUT_S >= 1e9  # a common "wait forever"


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(SchedlogError, match="max_concurrency"):
        App(store="memory://", max_concurrency=0)
    with pytest.raises(SchedlogError, match="not a store URL"):
        App(store="mysql://x")
    with pytest.raises(SchedlogError, match="unknown option 'bogus'") as bad:
        App(store="postgresql://user:secret@127.0.0.1/db?bogus=1")
    assert "secret" not in str(bad.value)  # credentials are never shown
    with pytest.raises(SchedlogError, match="needs a host and a database"):
        App(store="postgresql://127.0.0.1")
    for url, message in [
        ("sqlite:///tmp/x.db?lock_timeout=\u00b2", "lock_timeout must be a whole number"),
        ("postgresql://u@h/db?pool_size=\u00b2", "pool_size must be a whole number"),
        ("postgresql://u:secret@h:99999/db", "not a valid URL: Port out of range"),
        ("postgresql://u@h:abc/db", "not a valid URL: Port could not be cast"),
        ("postgresql://u@[::1/db", "not a valid URL: Invalid IPv6 URL"),
        ("postgresql+psycopg://u:secret@h/db", "not a store URL: .* or postgresql://"),
        # Made the tables, then every save failed ("Composite type ... not found").
        ("postgresql://u@h/db?schema=Jobs_A", "schema must be lower case .* got 'Jobs_A'"),
        ("postgresql://u@h/db?schema=jöbs", "schema must be letters, digits and _"),
    ]:
        with pytest.raises(SchedlogError, match=message) as bad:
            App(store=url)
        assert "secret" not in str(bad.value)
    for options, message in [
        ({"clock": "x"}, "clock must be a Clock"),
        ({"lease_ms": 2**70}, "lease_ms must be an int from 100 to"),
        ({"retention_ms": 2**70}, "retention_ms must be an int from 0 to"),
        ({"retention_ms": -1}, "retention_ms must be an int from 0 to"),
    ]:
        with pytest.raises(SchedlogError, match=message):
            App(store="memory://", **options)


def test_app_run_mutation_schedules_a_batch_in_one_commit_s10_s14(
    app: App, clock: FakeClock
) -> None:
    """The batch form: one mutation, run now from application code, schedules 1,000 jobs."""
    register_noop(app)
    seen: dict[str, object] = {}

    @app.mutation(name="jobs:fan_out")
    def fan_out(ctx, n: int) -> list[str]:
        seen["job_id"] = ctx.job_id
        return [ctx.scheduler.run_after(1_000, "jobs:noop", i) for i in range(n)]

    before = log_position(app)
    ids = app.run_mutation(fan_out, 1_000)
    assert seen["job_id"] is None  # no job runs it
    assert len(set(ids)) == 1_000
    assert log_position(app) == before + 1_000  # one Scheduled each, nothing else
    docs = {d["_id"]: d for d in app.scheduled_functions.query(limit=1000).items}
    assert set(docs) == set(ids)
    assert {d["scheduledTime"] for d in docs.values()} == {float(T0 + 1_000)}
    assert all(app.scheduled_functions.get(i)["state"]["kind"] == "pending" for i in ids[:5])
    app.start()
    clock.advance(1_000)
    app.wait_until_idle(timeout_s=60)  # 1,000 jobs to run
    assert {state(app, i) for i in ids} == {"success"}


def test_app_run_mutation_keeps_nothing_when_it_raises_s16(app: App) -> None:
    register_noop(app)

    @app.mutation(name="jobs:half")
    def half(ctx) -> None:
        for i in range(10):
            ctx.scheduler.run_after(0, "jobs:noop", i)
        msg = "changed my mind"
        raise RuntimeError(msg)

    before = log_position(app)
    with pytest.raises(RuntimeError, match="changed my mind"):
        app.run_mutation(half)
    assert log_position(app) == before
    assert all_docs(app) == []


def test_app_run_mutation_refuses_actions_and_the_1001st_job_s10(app: App) -> None:
    register_noop(app)

    @app.mutation(name="jobs:too_many")
    def too_many(ctx) -> None:
        for i in range(1_001):
            ctx.scheduler.run_after(0, "jobs:noop", i)

    with pytest.raises(SchedlogError, match="is an action, not a mutation"):
        app.run_mutation("jobs:noop")
    with pytest.raises(SchedlogError, match="too many functions scheduled"):
        app.run_mutation(too_many)
    assert all_docs(app) == []


def test_a_closed_app_says_so_for_every_call(clock: FakeClock, store_url: str) -> None:
    app = App(store=store_url, clock=clock)
    register_noop(app)
    job = app.scheduler.run_after(60_000, "jobs:noop")
    app.start()
    app.close()
    for write in (
        lambda: app.scheduler.run_after(0, "jobs:noop"),
        lambda: app.scheduler.cancel(job),
        app.scheduler.cancel_all,
        lambda: app.save(Account("late")),
    ):
        with pytest.raises(RuntimeClosedError, match="the App is closed"):
            write()
    for read in (
        lambda: app.scheduled_functions.get(job),
        app.scheduled_functions.query,
        lambda: app.history(job),
        lambda: app.children(job),
        app.stats,
    ):
        with pytest.raises(StoreError, match=r"the store is closed \(its App was closed\)"):
            read()


def test_app_save_takes_aggregates_only(app: App) -> None:
    with pytest.raises(SchedlogError, match=r"app\.save takes eventsourcing aggregates, got 'x'"):
        app.save("x")
