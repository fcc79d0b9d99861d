"""The store's orjson transcoder writes and reads what the library's JSONTranscoder does (S26).

The log is the truth, and stores written before it (by the library's transcoder) must read
the same; so must stores read by an older schedlog. Both directions are checked on the events
schedlog writes and on arbitrary values, including the ones orjson writes differently.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)
from hypothesis import given
from hypothesis import strategies as st

from schedlog.events import FunctionKind, Outcome, ScheduledFunction
from schedlog.projections.transcoder import OrjsonTranscoder

STAMP = dt.datetime(2026, 12, 2, 21, 53, 25, 774947, tzinfo=dt.UTC)


def _registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    for transcoding in (UUIDAsHex(), DatetimeAsISO(), DecimalAsStr()):
        transcoder.register(transcoding)
    return transcoder


LIBRARY = _registered(JSONTranscoder())
OURS = _registered(OrjsonTranscoder())


def _job_events() -> list[Any]:
    job = ScheduledFunction.schedule(
        name="billing:charge",
        kind=FunctionKind.MUTATION,
        args=["acc-1", 250, 1.5, None, True, {"k": [1, "é", "\n\x00"]}],
        kwargs={"note": "x"},
        scheduled_time_ms=1_800_000_005_000,
        creation_time_ms=1_800_000_000_000,
        parent_id="p",
    )
    job.retry(at_ms=1_800_000_005_001, error="conflict", next_run_ms=1_800_000_005_100)
    job.start("host:1:abc", 1_800_000_005_101, None)
    job.cancel(1_800_000_005_102)
    job.complete(Outcome.FAILED, 1_800_000_005_103, "ValueError: boom")
    return list(job.collect_events())


def test_job_events_are_written_byte_for_byte_as_the_library_writes_them() -> None:
    ours, library = Mapper(transcoder=OURS), Mapper(transcoder=LIBRARY)
    for event in _job_events():
        assert ours.to_stored_event(event).state == library.to_stored_event(event).state


def test_job_events_read_back_the_same_whoever_wrote_them() -> None:
    ours, library = Mapper(transcoder=OURS), Mapper(transcoder=LIBRARY)
    for event in _job_events():
        for writer in (ours, library):
            stored = writer.to_stored_event(event)
            for reader in (ours, library):
                back = reader.to_domain_event(stored)
                assert type(back) is type(event)
                assert vars(back) == vars(event)
                assert isinstance(vars(back)["timestamp"], dt.datetime)


@pytest.mark.parametrize(
    "value",
    [
        uuid.UUID("12345678-1234-5678-1234-567812345678"),  # orjson: a bare string
        [1, [uuid.UUID("12345678-1234-5678-1234-567812345678")]],
        {"when": dt.datetime(2027, 1, 1, tzinfo=dt.UTC)},  # a second tagged value
        decimal.Decimal("1.10"),
        float("nan"),  # orjson: null
        float("inf"),
        2**70,  # orjson: refused
        (1, 2),  # a tuple: a list either way
        {"_type_": "x"},  # a user key that looks like a tag, alone
    ],
)
def test_values_orjson_writes_differently_still_round_trip_as_the_library_does(
    value: object,
) -> None:
    state = {"timestamp": STAMP, "args": [value]}
    encoded = OURS.encode(state)
    assert encoded == LIBRARY.encode(state)
    decoded = OURS.decode(encoded)
    expected = LIBRARY.decode(encoded)
    if isinstance(value, float) and value != value:  # NaN is not equal to itself  # noqa: PLR0124
        assert repr(decoded["args"]) == repr(expected["args"]) == "[nan]"
    else:
        assert decoded == expected
    assert decoded["timestamp"] == STAMP


def test_an_unregistered_type_still_raises_the_library_error() -> None:
    with pytest.raises(TranscodingNotRegisteredError):
        OURS.encode({"timestamp": STAMP, "x": object()})


def test_a_lone_surrogate_fails_as_the_library_fails() -> None:
    state = {"timestamp": STAMP, "args": ["\ud800"]}
    with pytest.raises(UnicodeEncodeError):
        LIBRARY.encode(state)
    with pytest.raises(UnicodeEncodeError):
        OURS.encode(state)


@pytest.mark.parametrize("number", [2**64, 25 * 10**18 + 1, -(2**63) - 1, 10**40, -(10**40)])
def test_an_int_past_64_bits_reads_back_as_that_int(number: int) -> None:
    """orjson reads one as a float without a word (2**64 as 1.8446744073709552e+19): user
    aggregates holding amounts in wei or satoshis came back rounded, as floats."""
    state = {"timestamp": STAMP, "balance": number, "nested": [{"n": number}]}
    for encoded in (OURS.encode(state), LIBRARY.encode(state)):
        decoded = OURS.decode(encoded)
        assert decoded == state
        assert type(decoded["balance"]) is int
        assert type(decoded["nested"][0]["n"]) is int


_near_64_bits = st.integers(min_value=2**63 - 2, max_value=2**64 + 2) | st.integers(
    min_value=-(2**64) - 2, max_value=-(2**63) + 2
)


def _containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | _near_64_bits
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    _containers,
    max_leaves=12,
)


@given(_json)
def test_any_plain_value_is_written_the_library_s_way_and_reads_back(value: object) -> None:
    state = {"timestamp": STAMP, "args": [value], "kwargs": {"v": value}}
    try:
        expected = LIBRARY.encode(state)
    except UnicodeEncodeError:  # a lone surrogate in hypothesis' text
        with pytest.raises(UnicodeEncodeError):
            OURS.encode(state)
        return
    encoded = OURS.encode(state)
    assert LIBRARY.decode(encoded) == LIBRARY.decode(expected)
    assert OURS.decode(encoded) == LIBRARY.decode(expected)
    assert OURS.decode(expected) == LIBRARY.decode(expected)
