"""Bad input to the read side, cancel_all, replay and clocks: a clear SchedlogError naming it.

semantics.md, "Errors": every error raised to callers derives from `SchedlogError`. Each case
here raised a raw Python error (or answered wrongly without a word) before it was fixed.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from schedlog import (
    App,
    ConfigurationError,
    InvalidQueryError,
    SchedlogError,
    ScheduleValidationError,
)
from schedlog.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

LONE = "\ud800"  # what Python makes of a byte that is not UTF-8 (a command line's, say)


@pytest.fixture(params=["memory", "file"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    store = "memory://" if request.param == "memory" else f"sqlite://{tmp_path / 'jobs.db'}"
    made = App(store=store, clock=FakeClock())
    try:
        yield made
    finally:
        made.close()


def _charge(ctx: Any, n: int) -> None:
    del ctx, n


def test_text_that_is_not_utf8_is_refused_by_name(app: App) -> None:
    """It reached SQLite and came back as UnicodeEncodeError (`schedlog ls --name $'\\xff'`)."""
    calls = {
        "job id": lambda: app.scheduled_functions.get(LONE),
        "name": lambda: app.scheduled_functions.query(name=LONE),
        "parent_id": lambda: app.scheduled_functions.query(parent_id=LONE),
    }
    for label, call in calls.items():
        with pytest.raises(InvalidQueryError, match=f"{label} .* is not valid text"):
            call()
    with pytest.raises(InvalidQueryError, match="not valid text"):
        app.history(LONE)
    with pytest.raises(ScheduleValidationError, match=r"name .* is not valid text"):
        app.scheduler.cancel_all(name=LONE)
    with pytest.raises(ConfigurationError, match=r"storable: .* is not valid text"):
        app.action(name=f"billing:{LONE}")(_charge)


def test_cancel_all_takes_a_bound_past_64_bits_as_query_does(app: App) -> None:
    """`math.isnan` of an int too large for a float raised OverflowError (S24)."""
    app.action(name="billing:charge")(_charge)
    app.scheduler.run_after(1_000, "billing:charge", 1)
    assert len(app.scheduled_functions.query(scheduled_before_ms=10**400).items) == 1
    assert app.scheduler.cancel_all(before_ms=10**400) == 1
    assert app.scheduled_functions.query(state="canceled").items[0]["name"] == "billing:charge"


def test_clocks_answer_whole_milliseconds() -> None:
    """A float time was accepted, and the first `run_after` then failed on `&` (TypeError)."""
    with pytest.raises(
        ConfigurationError, match=r"whole milliseconds .* now_ms, got 1800000000000\.0"
    ):
        FakeClock(now_ms=1.8e12)  # type: ignore[arg-type]
    clock = FakeClock()
    with pytest.raises(ConfigurationError, match=r"for ms, got 0\.5"):
        clock.advance(0.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="for at_ms, got"):
        clock.set(float(clock.now_ms() + 1))  # type: ignore[arg-type]
    assert clock.now_ms() == FakeClock().now_ms()  # nothing moved
    with pytest.raises(ConfigurationError, match="cannot go back"):  # a ValueError too, as before
        clock.set(clock.now_ms() - 1)

    class Floaty(FakeClock):
        def now_ms(self) -> int:
            return super().now_ms() + 0.5  # type: ignore[return-value] # time.time() * 1000

    with pytest.raises(ConfigurationError, match=r"clock.now_ms\(\) must return whole .* int"):
        App(store="memory://", clock=Floaty())


def test_replay_refuses_a_progress_that_cannot_be_called(app: App) -> None:
    """It raised `'int' object is not callable` from inside the rebuild."""
    app.action(name="billing:charge")(_charge)
    app.scheduler.run_after(1_000, "billing:charge", 1)
    for as_of in (None, 1_800_000_000_000):
        with pytest.raises(ConfigurationError, match="progress must be a function"):
            app.replay(as_of, progress=5)  # type: ignore[call-overload]
    seen: list[tuple[int, int]] = []
    app.replay(progress=lambda read, total: seen.append((read, total)))
    assert seen  # a callable one is still called
    assert len(app.scheduled_functions.query().items) == 1  # the live view as it was


def test_a_cursor_goes_on_only_in_its_own_order(app: App) -> None:
    """An asc cursor given to a desc query returned the first page's rows again, silently."""
    app.action(name="billing:charge")(_charge)
    for n in range(4):
        app.scheduler.run_after(1_000 * (n + 1), "billing:charge", n)
    up = app.scheduled_functions.query(limit=2)
    assert up.cursor is not None
    with pytest.raises(InvalidQueryError, match="in 'asc' order, not 'desc'"):
        app.scheduled_functions.query(order="desc", limit=2, cursor=up.cursor)
    rest_up = app.scheduled_functions.query(limit=2, cursor=up.cursor)
    assert [d["args"][0] for d in up.items + rest_up.items] == [0, 1, 2, 3]
    down = app.scheduled_functions.query(order="desc", limit=2)
    assert down.cursor is not None
    rest = app.scheduled_functions.query(order="desc", limit=2, cursor=down.cursor)
    assert [d["args"][0] for d in down.items + rest.items] == [3, 2, 1, 0]
    older = base64.urlsafe_b64encode(
        orjson.dumps(orjson.loads(base64.urlsafe_b64decode(up.cursor))[:2])
    )
    assert app.scheduled_functions.query(limit=2, cursor=older.decode()).items == rest_up.items
    for forged in (
        [True, False, "asc"],
        [1, 2, "sideways"],
        [1, 2, []],
        [1, 2, {}],
        [1],
        [1, 2, "asc", 3],
    ):
        cursor = base64.urlsafe_b64encode(orjson.dumps(forged)).decode()
        with pytest.raises(InvalidQueryError, match="not one this view returned"):
            app.scheduled_functions.query(cursor=cursor)


def test_query_takes_the_function_as_cancel_all_does(app: App) -> None:
    """semantics.md: a function is referred to by the decorated object or by its name."""
    charge = app.action(name="billing:charge")(_charge)
    app.scheduler.run_after(1_000, charge, 1)
    assert [d["name"] for d in app.scheduled_functions.query(name=charge).items] == [
        "billing:charge"
    ]
    with app.replay(as_of=app.clock.now_ms()) as then:
        assert len(then.query(name=charge).items) == 1

    def stranger(ctx: Any) -> None:
        del ctx

    with pytest.raises(SchedlogError, match="stranger"):
        app.scheduled_functions.query(name=stranger)
    with pytest.raises(InvalidQueryError, match=r"registered name .* or the function, got 5"):
        app.scheduled_functions.query(name=5)  # type: ignore[arg-type]
