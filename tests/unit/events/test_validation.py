"""Checks of a schedule request: due times (S4-S6) and JSON-able, bounded arguments (S9, S10)."""

from __future__ import annotations

import datetime as dt
import enum
import inspect
import math
import uuid
import zoneinfo

import orjson
import pytest

import schedlog.events.errors as errors_module
from schedlog.events import (
    ArgsNotSerializableError,
    ArgsTooLargeError,
    SchedlogError,
    ScheduleValidationError,
)
from schedlog.events.validation import (
    check_args,
    due_time_after,
    due_time_at,
    encoded_size,
    is_plain_int,
    is_text,
)
from schedlog.events.values import MAX_ARGS_BYTES, MAX_SKEW_MS

NOW = 1_800_000_000_000
UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
NOW_DT = EPOCH + dt.timedelta(milliseconds=NOW)
FIVE_YEARS = dt.timedelta(days=5 * 366)


def test_s6_the_skew_limit_is_five_times_366_days() -> None:
    assert FIVE_YEARS // dt.timedelta(milliseconds=1) == MAX_SKEW_MS


def test_s10_the_args_limit_is_16_mib() -> None:
    assert MAX_ARGS_BYTES == 16 * 1024 * 1024


# S4: run_after's delay


@pytest.mark.parametrize(
    ("delay", "due"),
    [
        (0, NOW),
        (0.0, NOW),
        (-0.0, NOW),
        (5_000, NOW + 5_000),
        (2.5, NOW + 3),  # a fractional ms rounds up: never early
        (0.001, NOW + 1),
        (dt.timedelta(0), NOW),
        (dt.timedelta(seconds=5), NOW + 5_000),
        (dt.timedelta(milliseconds=1, microseconds=1), NOW + 2),
    ],
)
def test_s4_delay_is_an_int_float_or_timedelta(delay: object, due: int) -> None:
    assert due_time_after(delay, NOW) == due


def test_s4_zero_delay_is_due_now() -> None:
    assert due_time_after(0, NOW) == NOW


@pytest.mark.parametrize("delay", [True, False, "5", None, [5], 5j, object()])
def test_s4_delay_of_another_type_is_refused(delay: object) -> None:
    with pytest.raises(ScheduleValidationError, match="delay_ms must be an int, a float or a") as e:
        due_time_after(delay, NOW)
    assert e.value.field == "delay_ms"
    assert type(delay).__name__ in str(e.value)


@pytest.mark.parametrize("delay", [math.nan, math.inf, -math.inf])
def test_s4_delay_not_finite_is_refused(delay: float) -> None:
    with pytest.raises(ScheduleValidationError, match="delay_ms must be finite"):
        due_time_after(delay, NOW)


@pytest.mark.parametrize(
    "delay",
    [-1, -0.5, -(10**30), dt.timedelta(milliseconds=-1), dt.timedelta(microseconds=-999)],
)
def test_s4_negative_delay_is_refused(delay: object) -> None:
    with pytest.raises(ScheduleValidationError, match="delay_ms must be >= 0"):
        due_time_after(delay, NOW)


# S5: run_at's time


def test_s5_aware_datetime_gives_exact_ms() -> None:
    assert due_time_at(dt.datetime(2027, 1, 1, tzinfo=UTC), NOW) == 1_798_761_600_000


def test_s5_aware_datetime_in_another_zone_gives_the_same_instant() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert due_time_at(dt.datetime(2027, 1, 1, 2, 0, tzinfo=plus_two), NOW) == 1_798_761_600_000


def test_s5_sub_millisecond_datetime_rounds_up() -> None:
    when = dt.datetime(2027, 1, 1, 0, 0, 0, 1_500, tzinfo=UTC)
    assert due_time_at(when, NOW) == 1_798_761_600_002


@pytest.mark.parametrize(("when", "due"), [(NOW + 7, NOW + 7), (NOW + 7.2, NOW + 8)])
def test_s5_epoch_ms_number(when: float, due: int) -> None:
    assert due_time_at(when, NOW) == due


@pytest.mark.parametrize("past", [NOW - 1, NOW - 86_400_000, NOW_DT - dt.timedelta(hours=1)])
def test_s5_a_past_time_is_kept_as_given(past: object) -> None:
    expected = (
        (past - EPOCH) // dt.timedelta(milliseconds=1) if isinstance(past, dt.datetime) else past
    )
    assert due_time_at(past, NOW) == expected
    assert expected < NOW


def test_s5_naive_datetime_is_refused() -> None:
    naive = dt.datetime(2027, 1, 1)
    with pytest.raises(ScheduleValidationError, match="timezone-aware") as e:
        due_time_at(naive, NOW)
    assert e.value.field == "when"
    assert "naive" in str(e.value)


class _NoOffset(dt.tzinfo):
    def utcoffset(self, _when: dt.datetime | None) -> dt.timedelta | None:
        return None

    def dst(self, _when: dt.datetime | None) -> dt.timedelta | None:
        return None

    def tzname(self, _when: dt.datetime | None) -> str | None:
        return None


def test_s5_datetime_whose_tzinfo_has_no_offset_is_naive_and_refused() -> None:
    with pytest.raises(ScheduleValidationError, match="timezone-aware"):
        due_time_at(dt.datetime(2027, 1, 1, tzinfo=_NoOffset()), NOW)


class _Broken(dt.tzinfo):
    def __init__(self, offset: object) -> None:
        self.offset = offset

    def utcoffset(self, _when: dt.datetime | None) -> dt.timedelta | None:
        if isinstance(self.offset, Exception):
            raise self.offset
        return self.offset  # type: ignore[return-value]

    def dst(self, _when: dt.datetime | None) -> dt.timedelta | None:
        return None


@pytest.mark.parametrize(
    "offset", [RuntimeError("boom"), "+01:00", dt.timedelta(hours=25)], ids=["raises", "str", "25h"]
)
def test_s5_a_tzinfo_that_misbehaves_is_refused_by_name(offset: object) -> None:
    """Its error escaped run_at as a bare RuntimeError, TypeError or ValueError."""
    with pytest.raises(ScheduleValidationError, match="tzinfo whose UTC offset cannot be used"):
        due_time_at(dt.datetime(2027, 1, 1, tzinfo=_Broken(offset)), NOW)


@pytest.mark.parametrize("when", [True, "2027-01-01", None, dt.date(2027, 1, 1), [NOW]])
def test_s5_when_of_another_type_is_refused(when: object) -> None:
    with pytest.raises(ScheduleValidationError, match="when must be epoch milliseconds"):
        due_time_at(when, NOW)


@pytest.mark.parametrize("when", [math.nan, math.inf, -math.inf])
def test_s5_when_not_finite_is_refused(when: float) -> None:
    with pytest.raises(ScheduleValidationError, match="when must be finite"):
        due_time_at(when, NOW)


# S6: at most 5 x 366 days either way


def test_s6_delay_exactly_at_the_limit_is_accepted() -> None:
    assert due_time_after(MAX_SKEW_MS, NOW) == NOW + MAX_SKEW_MS
    assert due_time_after(FIVE_YEARS, NOW) == NOW + MAX_SKEW_MS


@pytest.mark.parametrize("delay", [MAX_SKEW_MS + 1, MAX_SKEW_MS + 0.5, 1e300, 10**40])
def test_s6_delay_past_the_limit_is_refused(delay: float) -> None:
    with pytest.raises(ScheduleValidationError, match="more than 5 years in the future") as e:
        due_time_after(delay, NOW)
    assert e.value.field == "delay_ms"


def test_s6_timedelta_past_the_limit_is_refused() -> None:
    with pytest.raises(ScheduleValidationError, match="more than 5 years in the future"):
        due_time_after(FIVE_YEARS + dt.timedelta(milliseconds=1), NOW)


@pytest.mark.parametrize(
    "when", [NOW + MAX_SKEW_MS, NOW - MAX_SKEW_MS, NOW_DT + FIVE_YEARS, NOW_DT - FIVE_YEARS]
)
def test_s6_when_exactly_at_the_limit_is_accepted(when: object) -> None:
    due = due_time_at(when, NOW)
    assert abs(due - NOW) == MAX_SKEW_MS


@pytest.mark.parametrize(
    "when",
    [
        NOW + MAX_SKEW_MS + 1,
        NOW + MAX_SKEW_MS + 0.5,
        1e300,
        10**40,
        NOW_DT + FIVE_YEARS + dt.timedelta(milliseconds=1),
        dt.datetime(9999, 12, 31, tzinfo=UTC),
    ],
)
def test_s6_when_too_far_in_the_future_is_refused(when: object) -> None:
    with pytest.raises(ScheduleValidationError, match="more than 5 years in the future") as e:
        due_time_at(when, NOW)
    assert e.value.field == "when"


@pytest.mark.parametrize(
    "when",
    [
        NOW - MAX_SKEW_MS - 1,
        -1e300,
        -(10**40),
        0,
        NOW_DT - FIVE_YEARS - dt.timedelta(milliseconds=1),
        dt.datetime(1, 1, 1, tzinfo=UTC),
    ],
)
def test_s6_when_too_far_in_the_past_is_refused(when: object) -> None:
    with pytest.raises(ScheduleValidationError, match="more than 5 years in the past"):
        due_time_at(when, NOW)


def test_s6_the_limit_is_relative_to_the_given_now() -> None:
    later = NOW + 10 * MAX_SKEW_MS
    assert due_time_after(MAX_SKEW_MS, later) == later + MAX_SKEW_MS
    assert due_time_at(later - MAX_SKEW_MS, later) == later - MAX_SKEW_MS


# S9: what an argument may be


AN_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
A_TIME = dt.datetime(2027, 1, 1, 12, 30, tzinfo=UTC)


def test_s9_allowed_types_are_copied_equal() -> None:
    args = [
        "s",
        "",
        0,
        -(2**63),
        2**64 - 1,
        1.5,
        True,
        False,
        None,
        [1, [2, [3]]],
        {"a": {"b": [AN_ID, A_TIME]}, "": None},
        AN_ID,
        A_TIME,
    ]
    kwargs = {"x": AN_ID, "when": A_TIME, "nested": [{"id": AN_ID}]}
    copied_args, copied_kwargs, size = check_args(args, kwargs)
    assert copied_args == args
    assert copied_kwargs == kwargs
    assert type(copied_args) is list
    assert type(copied_kwargs) is dict
    assert size == len(orjson.dumps(args)) + len(orjson.dumps(kwargs))


def test_s9_uuid_and_datetime_stay_uuid_and_datetime() -> None:
    (copied_id, copied_time), _, _ = check_args([AN_ID, A_TIME], {})
    assert isinstance(copied_id, uuid.UUID)
    assert isinstance(copied_time, dt.datetime)


def test_s9_a_tuple_is_a_list_in_json_so_the_error_says_pass_a_list() -> None:
    with pytest.raises(ArgsNotSerializableError, match="pass a list"):
        check_args([(1, 2)], {})


def test_s9_no_arguments() -> None:
    assert check_args([], {}) == ([], {}, len(b"[]") + len(b"{}"))


REFUSED = [
    pytest.param({1, 2}, "set", id="set"),
    pytest.param(frozenset(), "frozenset", id="frozenset"),
    pytest.param((1, 2), "tuple", id="tuple"),
    pytest.param(b"bytes", "bytes", id="bytes"),
    pytest.param(bytearray(b"x"), "bytearray", id="bytearray"),
    pytest.param(object(), "object", id="object"),
    pytest.param(1j, "complex", id="complex"),
    pytest.param(dt.date(2027, 1, 1), "date", id="date"),
    pytest.param({1: "a"}, "not a str", id="int-key"),
    pytest.param({("a",): "a"}, "not a str", id="tuple-key"),
    pytest.param(math.nan, "not a finite float", id="nan"),
    pytest.param(math.inf, "not a finite float", id="inf"),
    pytest.param(-math.inf, "not a finite float", id="-inf"),
    pytest.param(2**64, "64-bit", id="int-too-big"),
    pytest.param(-(2**63) - 1, "64-bit", id="int-too-small"),
    pytest.param(10**100, "64-bit", id="huge-int"),
]


@pytest.mark.parametrize(("bad", "says"), REFUSED)
def test_s9_refused_positional_argument_is_named(bad: object, says: str) -> None:
    with pytest.raises(ArgsNotSerializableError) as e:
        check_args(["fine", bad, "fine"], {})
    message = str(e.value)
    assert message.startswith("argument 2 (args[1])")
    assert says in message
    assert e.value.field == "argument 2 (args[1])"


@pytest.mark.parametrize(("bad", "says"), REFUSED)
def test_s9_refused_keyword_argument_is_named(bad: object, says: str) -> None:
    with pytest.raises(ArgsNotSerializableError) as e:
        check_args([], {"ok": 1, "x": bad})
    assert str(e.value).startswith("keyword argument 'x'")
    assert says in str(e.value)


@pytest.mark.parametrize(("bad", "says"), REFUSED)
def test_s9_refused_value_nested_deep_names_its_path(bad: object, says: str) -> None:
    with pytest.raises(ArgsNotSerializableError) as e:
        check_args([1, [0, {"k": [bad]}]], {})
    assert str(e.value).startswith("argument 2 (args[1])[1]['k'][0]")
    assert says in str(e.value)


def test_s9_refused_argument_error_is_schedlog_value_and_type_error() -> None:
    with pytest.raises(ArgsNotSerializableError) as e:
        check_args([{1, 2}], {})
    assert isinstance(e.value, SchedlogError)
    assert isinstance(e.value, ScheduleValidationError)
    assert isinstance(e.value, ValueError)
    assert isinstance(e.value, TypeError)
    assert e.value.value == {1, 2}


def test_s9_the_message_lists_what_is_allowed() -> None:
    with pytest.raises(ArgsNotSerializableError, match="allowed: str, int, float, bool, None"):
        check_args([object()], {})


def test_s9_a_cyclic_argument_is_refused_with_a_schedlog_error() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(ArgsNotSerializableError, match="argument 1"):
        check_args([cyclic], {})


def test_s9_an_argument_nested_deeper_than_json_allows_is_refused_with_a_schedlog_error() -> None:
    deep: list[object] = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(ArgsNotSerializableError, match="argument 1"):
        check_args([deep], {})


def test_s9_reasonably_deep_nesting_is_accepted() -> None:
    deep: object = [1]
    for i in range(200):
        deep = {"k": deep} if i % 2 else [deep]
    copied, kwargs, _ = check_args([deep], {"x": deep})
    assert copied == [deep]
    assert kwargs == {"x": deep}


def test_s9_copies_are_independent_of_the_inputs() -> None:
    inner = [1, 2]
    mapping = {"k": inner}
    args = [inner, mapping]
    kwargs = {"m": mapping}
    copied_args, copied_kwargs, _ = check_args(args, kwargs)
    inner.append(3)
    mapping["new"] = [4]
    args.append("late")
    kwargs["late"] = {}
    assert copied_args == [[1, 2], {"k": [1, 2]}]
    assert copied_kwargs == {"m": {"k": [1, 2]}}
    copied_args[0].append(99)
    assert inner == [1, 2, 3]


def test_s9_copies_share_no_container_with_the_inputs() -> None:
    arg = {"a": [[1]]}
    (copied,), _, _ = check_args([arg], {})
    assert copied == arg
    assert copied is not arg
    assert copied["a"] is not arg["a"]
    assert copied["a"][0] is not arg["a"][0]


# S10: the size limit


def _big(n: int) -> str:
    return "x" * n


def test_s10_args_exactly_at_the_limit_are_accepted() -> None:
    # ["x…x"] is n + 4 bytes, and the empty kwargs {} are 2 more.
    n = MAX_ARGS_BYTES - 6
    _, _, size = check_args([_big(n)], {})
    assert size == MAX_ARGS_BYTES


def test_s10_args_over_the_limit_are_refused() -> None:
    n = MAX_ARGS_BYTES - 5
    with pytest.raises(ArgsTooLargeError) as e:
        check_args([_big(n)], {})
    assert "16 MiB" in str(e.value)
    assert str(MAX_ARGS_BYTES + 1) in str(e.value)
    assert e.value.value == MAX_ARGS_BYTES + 1
    assert isinstance(e.value, SchedlogError)
    assert isinstance(e.value, ScheduleValidationError)


def test_s10_kwargs_count_towards_the_limit() -> None:
    with pytest.raises(ArgsTooLargeError):
        check_args(["a"], {"k": _big(MAX_ARGS_BYTES)})


def test_s10_size_counts_the_encoded_bytes_not_characters() -> None:
    _, _, size = check_args(["é"], {})
    assert size == len('["é"]'.encode()) + 2
    assert encoded_size("é") == 4


# Small helpers the other layers use


@pytest.mark.parametrize(("value", "ok"), [(1, True), (0, True), (True, False), (1.0, False)])
def test_is_plain_int(value: object, ok: bool) -> None:
    assert is_plain_int(value) is ok


@pytest.mark.parametrize(("value", "ok"), [("a", True), (" a ", True), ("", False), (" ", False)])
def test_is_text(value: object, ok: bool) -> None:
    assert is_text(value) is ok


def test_is_text_refuses_non_str() -> None:
    assert is_text(None) is False
    assert is_text(b"a") is False


# Every error derives from SchedlogError


def test_every_domain_error_derives_from_schedlog_error() -> None:
    classes = [getattr(errors_module, name) for name in errors_module.__all__]
    assert len(classes) == 12
    for cls in classes:
        assert inspect.isclass(cls)
        assert issubclass(cls, SchedlogError), cls


def test_schedule_validation_errors_are_value_errors() -> None:
    for cls in (ScheduleValidationError, ArgsNotSerializableError, ArgsTooLargeError):
        assert issubclass(cls, ValueError)
    assert issubclass(ArgsNotSerializableError, TypeError)
    assert issubclass(errors_module.TooManyScheduledError, ScheduleValidationError)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: due_time_after(10**400, NOW), "more than 5 years in the future"),
        (lambda: due_time_at(10**400, NOW), "more than 5 years in the future"),
        (lambda: due_time_at(-(10**400), NOW), "more than 5 years in the past"),
    ],
)
def test_s6_ints_too_large_for_a_float_are_refused_by_the_skew_limit(call, message: str) -> None:
    with pytest.raises(ScheduleValidationError, match=message):
        call()


def test_s6_s9_an_int_too_long_to_print_is_named_by_its_size() -> None:
    """repr() of an int over 4,300 digits raises: the error message itself crashed."""
    huge = 10**5000
    with pytest.raises(ScheduleValidationError, match="an int of 16610 bits is more than 5"):
        due_time_after(huge, NOW)
    with pytest.raises(ScheduleValidationError, match="an int of 16610 bits is more than 5"):
        due_time_at(huge, NOW)
    with pytest.raises(ArgsNotSerializableError, match="64-bit range: an int of 16610 bits"):
        check_args([huge], {})
    with pytest.raises(ScheduleValidationError, match=">= 0, got an int of 16610 bits"):
        due_time_after(-huge, NOW)
    with pytest.raises(ArgsNotSerializableError, match="key that is not a str: an int of 16610"):
        check_args([{huge: 1}], {})


def test_s9_keyword_arguments_that_are_exactly_the_store_s_tags_are_refused() -> None:
    """Stored as a dict, they read back as the store's own tag: a job no one could read."""
    with pytest.raises(ArgsNotSerializableError, match="reserves for its own tags") as e:
        check_args([], {"_type_": "datetime_iso", "_data_": "x"})
    assert e.value.field == "kwargs"
    assert check_args([], {"_type_": "x", "_data_": 1, "more": 2})[1]["more"] == 2


class _Color(enum.IntEnum):
    RED = 1


class _Mood(str, enum.Enum):  # noqa: UP042 - str() of a member is "_Mood.CALM", not its value
    CALM = "calm"


class _Id(uuid.UUID):
    pass


class _Stamp(dt.datetime):
    pass


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_Color.RED, 1),
        (_Mood.CALM, "calm"),
        (_Id(int=7), uuid.UUID(int=7)),
        (type("Ratio", (float,), {})(0.5), 0.5),
        (_Stamp(2027, 1, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 1, tzinfo=dt.UTC)),
        ({_Mood.CALM: [_Color.RED]}, {"calm": [1]}),
    ],
)
def test_s9_a_subclass_of_an_allowed_type_is_taken_as_its_base_type(
    value: object, expected: object
) -> None:
    """Stored as the base type's value, it came back so anyway (an IntEnum as an int); UUID,
    float and datetime subclasses were refused with orjson's "Type is not JSON serializable"."""
    (copied,), _, _ = check_args([value], {})
    assert copied == expected
    assert type(copied) is type(expected)
    assert orjson.loads(orjson.dumps(copied)) == orjson.loads(orjson.dumps(expected))
    if isinstance(expected, dict):
        assert [type(k) for k in copied] == [str]  # type: ignore[attr-defined]
        assert [type(v) for v in copied["calm"]] == [int]  # type: ignore[index]


def test_s9_a_zoned_datetime_is_taken_at_its_fixed_offset_and_instant() -> None:
    """What the store keeps (ISO 8601): the instant and its offset; no zone name, no fold."""
    zone = zoneinfo.ZoneInfo("America/New_York")
    for fold in (0, 1):  # 01:30 came twice on 2021-11-07: -04:00, then -05:00
        when = dt.datetime(2021, 11, 7, 1, 30, tzinfo=zone, fold=fold)
        (copied,), _, _ = check_args([when], {})
        assert copied.tzinfo == dt.timezone(when.utcoffset())
        assert copied.timestamp() == when.timestamp()


class _Broken(dt.tzinfo):
    def __init__(self, offset: object) -> None:
        self.offset = offset

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        del when
        if isinstance(self.offset, Exception):
            raise self.offset
        return self.offset  # type: ignore[return-value]

    def dst(self, when: dt.datetime | None) -> None:
        del when


@pytest.mark.parametrize(
    "offset", [RuntimeError("no zone data"), "5h", dt.timedelta(hours=25)], ids=repr
)
def test_s9_a_datetime_whose_tzinfo_fails_is_refused_by_name(offset: object) -> None:
    """orjson crashed the process (SIGSEGV) on a tzinfo that raised; a mutation holding one
    crashed the worker at every restart. Python's own checks raised TypeError/ValueError."""
    bad = dt.datetime(2027, 1, 1, tzinfo=_Broken(offset))
    with pytest.raises(
        ArgsNotSerializableError,
        match=r"keyword argument 'at'\[0\] is a datetime whose tzinfo gives no offset",
    ):
        check_args([], {"at": [bad]})


def test_s9_a_datetime_whose_tzinfo_gives_none_is_taken_as_naive() -> None:
    (copied,), _, _ = check_args([dt.datetime(2027, 1, 1, 9, tzinfo=_Broken(None))], {})
    assert copied == dt.datetime(2027, 1, 1, 9)
    assert copied.tzinfo is None
