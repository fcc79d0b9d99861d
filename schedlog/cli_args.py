"""The `schedlog` command line's argument types: TIME values, retention days, `--json`.

(Front door.)
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    _TimeType = click.ParamType[int, Any]
    _DaysType = click.ParamType[int | None, Any]
else:  # older click (>= 8.1 is allowed) has no generic ParamType at run time
    _TimeType = _DaysType = click.ParamType

__all__ = ["JSON_FLAG", "RETENTION", "TIME", "TIME_HELP", "TIME_OPTION", "parse_time"]

_DAY_MS = 24 * 60 * 60 * 1000
_MAX_RETENTION_DAYS = 100 * 366
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MS = (datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC) - _EPOCH) // timedelta(
    milliseconds=1
)
_DIGITS = re.compile(r"[0-9]+")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_time(text: str) -> int:
    """Return TIME as epoch milliseconds (UTC).

    TIME is an integer of epoch milliseconds (`1800000000000`), an ISO 8601 date-time with `Z`
    or a UTC offset (`2027-01-15T08:00:00Z`, `2027-01-15T09:00+01:00`; finer than a
    millisecond is truncated), or a date alone (`2027-01-15`), read as midnight UTC. A
    date-time without an offset is refused: the CLI would otherwise guess a time zone.

    Raises:
        ValueError: TIME is none of these, or outside years 1970 to 9999.

    """
    value = text.strip()
    if _DIGITS.fullmatch(value):
        ms = int(value)
        if ms > _MAX_MS:
            raise ValueError(f"{text!r} is too large for epoch milliseconds (max {_MAX_MS})")
        return ms
    try:
        if _DATE.fullmatch(value):
            moment = datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give epoch milliseconds, an ISO 8601 date-time with "
            "'Z' or an offset (2027-01-15T08:00:00Z), or a date (2027-01-15, UTC)"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{text!r} has no UTC offset: add 'Z' for UTC or an offset like '+01:00', "
            "or give epoch milliseconds"
        )
    ms = (moment - _EPOCH) // timedelta(milliseconds=1)
    if ms < 0:
        raise ValueError(f"{text!r} is before 1970-01-01T00:00:00Z")
    return ms


TIME_HELP = (
    "TIME is epoch milliseconds (1800000000000), an ISO 8601 date-time with Z or an offset "
    "(2027-01-15T08:00:00Z, 2027-01-15T09:00:00+01:00), or a date (2027-01-15: midnight UTC)."
)


class _Time(_TimeType):
    """A TIME option's value as epoch ms; a bad one is an `Error:` with exit status 1."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """Return `value` parsed by `parse_time`."""
        del ctx
        if isinstance(value, int):
            return value
        try:
            return parse_time(str(value))
        except ValueError as e:
            where = f"{param.opts[0]}: " if param is not None and param.opts else ""
            raise click.ClickException(f"{where}{e}") from None


class _Retention(_DaysType):
    """A number of days (fractions allowed) as ms, or `forever` as None (keep finished jobs)."""

    name = "days"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | None:
        """Return `value` in ms, or None for `forever`."""
        if value is None or value == "forever":
            return None
        if isinstance(value, int):
            return value
        try:
            days = float(value)
        except ValueError:
            days = -1.0
        if not 0 <= days <= _MAX_RETENTION_DAYS:
            self.fail(f"expected a number of days or 'forever', got {value!r}", param, ctx)
        return round(days * _DAY_MS)


TIME = _Time()
RETENTION = _Retention()
TIME_OPTION: dict[str, Any] = {"type": TIME, "default": None, "metavar": "TIME"}
"""`click.option("--before", **TIME_OPTION, help=…)`: an optional TIME, as epoch ms."""


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:  # noqa: FBT001
    if value and ctx.obj is not None:  # `schedlog ls --json` as `schedlog --json ls`
        ctx.obj = replace(ctx.obj, as_json=True)


JSON_FLAG = click.option(
    "--json",
    is_flag=True,
    expose_value=False,
    callback=_set_json,
    help="Print JSON (as --json before the command).",
)
