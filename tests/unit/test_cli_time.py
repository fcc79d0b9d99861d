"""TIME values of the command line: epoch ms, ISO 8601 with an offset, or a date (UTC)."""

from __future__ import annotations

import pytest

from schedlog.cli_args import parse_time
from schedlog.cli_render import iso_ms

T0 = 1_800_000_000_000  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1800000000000", T0),
        (" 1800000000000 ", T0),
        ("0", 0),
        ("2027-01-15T08:00:00Z", T0),
        ("2027-01-15T08:00:00.000Z", T0),
        ("2027-01-15T08:00:00.123Z", T0 + 123),
        ("2027-01-15T08:00:00.123999Z", T0 + 123),  # finer than a ms is truncated
        ("2027-01-15T08:00:00+00:00", T0),
        ("2027-01-15T09:30:00+01:30", T0),
        ("2027-01-15T03:00:00-05:00", T0),
        ("2027-01-15 08:00:00Z", T0),
        ("2027-01-15", T0 - 8 * 3_600_000),  # a date alone is midnight UTC
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_parse_time_accepts_epoch_ms_iso_with_offset_and_dates(text: str, expected: int) -> None:
    assert parse_time(text) == expected


def test_parse_time_round_trips_iso_ms() -> None:
    for ms in (0, T0, T0 + 1, T0 + 999, 253_402_300_799_999):
        assert parse_time(iso_ms(ms)) == ms


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2027-01-15T08:00:00", "has no UTC offset"),  # naive: refused, not guessed
        ("2027-01-15T08:00", "has no UTC offset"),
        ("yesterday", "is not a time"),
        ("", "is not a time"),
        ("-5", "is not a time"),
        ("1.5", "is not a time"),
        ("2027-13-01", "is not a time"),
        ("2027-01-15T25:00:00Z", "is not a time"),
        ("1969-12-31T23:59:59Z", "before 1970"),
        ("99999999999999999999", "too large"),
    ],
)
def test_parse_time_refuses_with_a_message_naming_the_value(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        parse_time(text)
    assert repr(text) in str(error.value)
