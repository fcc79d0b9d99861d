"""Checks a schedule request: due time (S4-S6) and JSON-able, bounded arguments (S9, S10)."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import TYPE_CHECKING, TypeGuard

import orjson

from schedlog.events.errors import (
    ArgsNotSerializableError,
    ArgsTooLargeError,
    ScheduleValidationError,
)
from schedlog.events.values import MAX_ARGS_BYTES, MAX_SKEW_MS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "check_args",
    "due_time_after",
    "due_time_at",
    "encoded_size",
    "is_plain_int",
    "is_text",
    "unencodable",
]

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_RESERVED_KEYS = frozenset({"_type_", "_data_"})
_MAX_DEPTH = 250
"""How deep lists and dicts may nest in one argument: orjson refuses 255 levels in all."""


def _shown(value: object) -> str:
    """Return `repr(value)` for a message; an int too long to print is shown by its size."""
    try:
        return repr(value)
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        return f"an int of {value.bit_length() if isinstance(value, int) else '?'} bits"


def _check_skew(due_ms: int, now_ms: int, field: str, value: object) -> int:
    if due_ms - now_ms > MAX_SKEW_MS:
        raise ScheduleValidationError(
            f"{field}={_shown(value)} is more than 5 years in the future", field=field, value=value
        )
    if now_ms - due_ms > MAX_SKEW_MS:
        raise ScheduleValidationError(
            f"{field}={_shown(value)} is more than 5 years in the past", field=field, value=value
        )
    return due_ms


def due_time_after(delay_ms: object, now_ms: int) -> int:
    """Return the due time of `run_after(delay_ms)` at `now_ms` (S4, S6).

    A fractional millisecond rounds up, so a job never fires early.
    """
    if isinstance(delay_ms, dt.timedelta):
        micros = delay_ms // dt.timedelta(microseconds=1)  # exact: no float rounding
        delay: float = -(-micros // 1000) if micros >= 0 else -1  # -1 us is negative too
    elif isinstance(delay_ms, (int, float)) and not isinstance(delay_ms, bool):
        delay = delay_ms
    else:
        raise ScheduleValidationError(
            "delay_ms must be an int, a float or a timedelta, "
            f"got {type(delay_ms).__name__} {_shown(delay_ms)}",
            field="delay_ms",
            value=delay_ms,
        )
    if not isinstance(delay, int) and not math.isfinite(delay):  # an int is (of any size)
        raise ScheduleValidationError(
            f"delay_ms must be finite, got {_shown(delay_ms)}", field="delay_ms", value=delay_ms
        )
    if delay < 0:
        raise ScheduleValidationError(
            f"delay_ms must be >= 0, got {_shown(delay_ms)}", field="delay_ms", value=delay_ms
        )
    if delay > 2 * MAX_SKEW_MS:  # keeps the int conversion below cheap and exact
        return _check_skew(now_ms + 2 * MAX_SKEW_MS, now_ms, "delay_ms", delay_ms)
    return _check_skew(now_ms + math.ceil(delay), now_ms, "delay_ms", delay_ms)


def due_time_at(when: object, now_ms: int) -> int:
    """Return the due time of `run_at(when)` (S5, S6); a past time stays as given (due now)."""
    if isinstance(when, dt.datetime):
        try:
            offset = None if when.tzinfo is None else when.tzinfo.utcoffset(when)
            if offset is not None:
                epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
                due = (when - epoch) // dt.timedelta(microseconds=1)
        except Exception as error:  # a tzinfo of the caller's that misbehaves
            raise ScheduleValidationError(
                f"when has a tzinfo whose UTC offset cannot be used: {error!r}",
                field="when",
                value=when,
            ) from error
        if offset is None:
            raise ScheduleValidationError(
                f"when must be a timezone-aware datetime, got the naive {_shown(when)} "
                "(ambiguous: attach a tzinfo such as datetime.UTC)",
                field="when",
                value=when,
            )
        return _check_skew(-(-due // 1000), now_ms, "when", when)
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        if isinstance(when, float) and not math.isfinite(when):  # an int is (of any size)
            raise ScheduleValidationError(
                f"when must be finite, got {_shown(when)}", field="when", value=when
            )
        if abs(when - now_ms) > 2 * MAX_SKEW_MS:  # exact for ints too big for a float
            beyond = 2 * MAX_SKEW_MS if when > now_ms else -2 * MAX_SKEW_MS
            return _check_skew(now_ms + beyond, now_ms, "when", when)
        return _check_skew(math.ceil(when), now_ms, "when", when)
    raise ScheduleValidationError(
        "when must be epoch milliseconds (int or float) or a timezone-aware datetime, "
        f"got {type(when).__name__} {_shown(when)}",
        field="when",
        value=when,
    )


def _copy(value: object, path: str, depth: int = 0) -> object:
    """Return a copy of `value` made only of the types S9 allows, or raise naming `path`."""
    if depth > _MAX_DEPTH:
        raise ArgsNotSerializableError(
            f"{path} nests lists or dicts more than {_MAX_DEPTH} levels deep (or contains itself)",
            field=path,
            value=None,
        )
    if isinstance(value, list):
        return [_copy(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        if set(value) == _RESERVED_KEYS:
            raise ArgsNotSerializableError(
                f"{path} is a dict with exactly the keys '_type_' and '_data_', which the "
                "event store reserves for its own tags; add or rename a key",
                field=path,
                value=value,
            )
        copied: dict[str, object] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ArgsNotSerializableError(
                    f"{path} has a key that is not a str: {_shown(key)}", field=path, value=value
                )
            copied[str.__str__(key)] = _copy(item, f"{path}[{_shown(key)}]", depth + 1)
        return copied
    return _copy_scalar(value, path)


def _copy_scalar(value: object, path: str) -> object:
    """Return a scalar S9 allows, as the store keeps it, or raise naming `path`."""
    kind = type(value)
    if value is None or kind is str or kind is bool or kind is uuid.UUID:
        return value
    if isinstance(value, dt.datetime):
        return _copy_datetime(value, path)
    # A subclass (an enum member, say) is stored as its base type's value, and comes back so.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, uuid.UUID):
        return uuid.UUID(int=value.int)
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ArgsNotSerializableError(
                f"{path} is an int out of the 64-bit range: {_shown(value)}",
                field=path,
                value=value,
            )
        return value if kind is int else int.__int__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ArgsNotSerializableError(
                f"{path} is not a finite float: {_shown(value)}", field=path, value=value
            )
        return value if kind is float else float.__float__(value)
    hint = " (it would come back as a list; pass a list)" if isinstance(value, tuple) else ""
    raise ArgsNotSerializableError(
        f"{path} is a {type(value).__name__}, which is not JSON-serializable{hint}; "
        "allowed: str, int, float, bool, None, list, dict with str keys, UUID, datetime",
        field=path,
        value=value,
    )


def _copy_datetime(value: dt.datetime, path: str) -> dt.datetime:
    """Return `value` as the store keeps it: a plain datetime, naive or at a fixed offset.

    The store writes the instant and its offset (ISO 8601), not the tzinfo: a `ZoneInfo`
    datetime comes back at the same instant with a `datetime.timezone` of that offset. A tzinfo
    that fails (or answers what is no offset) is refused here: orjson crashed the process on
    one (SIGSEGV), and a mutation holding it crashed every restart.
    """
    try:
        offset = value.utcoffset()
    except Exception as error:  # whatever a user's tzinfo raises
        raise ArgsNotSerializableError(
            f"{path} is a datetime whose tzinfo gives no offset: {type(error).__name__}: {error}",
            field=path,
            value=None,
        ) from None
    if type(value) is dt.datetime and (value.tzinfo is None or type(value.tzinfo) is dt.timezone):
        return value  # kept as it is (fold aside, which ISO 8601 does not carry)
    tzinfo = None if offset is None else dt.timezone(offset)
    return dt.datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
        tzinfo=tzinfo,
    )


_SCALARS = frozenset({str, bool, type(None)})
"""Argument types kept as they are, without a call to `_copy` (most arguments are these)."""


def _small_int(value: object) -> bool:
    return type(value) is int and _INT_MIN <= value <= _INT_MAX


def _arg_path(i: int) -> str:
    return f"argument {i + 1} (args[{i}])"


def check_args(
    args: Sequence[object], kwargs: Mapping[str, object]
) -> tuple[list[object], dict[str, object], int]:
    """Validate and copy a call's arguments (S9); return them with their encoded size (S10)."""
    copied_args = [
        a if type(a) in _SCALARS or _small_int(a) else _copy(a, _arg_path(i))
        for i, a in enumerate(args)
    ]
    if set(kwargs) == _RESERVED_KEYS:  # stored as a dict: read back as the store's own tag
        raise ArgsNotSerializableError(
            "the keyword arguments are exactly '_type_' and '_data_', which the event store "
            "reserves for its own tags; add or rename one",
            field="kwargs",
            value=None,
        )
    copied_kwargs = {k: _copy(v, f"keyword argument {k!r}") for k, v in kwargs.items()}
    try:
        size = encoded_size(copied_args) + encoded_size(copied_kwargs)
    except (TypeError, orjson.JSONEncodeError) as error:  # e.g. a lone surrogate in a str
        named = [(_arg_path(i), a) for i, a in enumerate(copied_args)]
        named += [(f"keyword argument {k!r}", v) for k, v in copied_kwargs.items()]
        for path, value in named:
            try:
                encoded_size(value)
            except (TypeError, orjson.JSONEncodeError):
                raise ArgsNotSerializableError(
                    f"{path} cannot be encoded as JSON: {error}", field=path, value=value
                ) from error
        raise ArgsNotSerializableError(
            f"arguments cannot be encoded as JSON: {error}", field="args", value=None
        ) from error
    if size > MAX_ARGS_BYTES:
        raise ArgsTooLargeError(
            f"arguments are {size} bytes encoded; the limit is {MAX_ARGS_BYTES} (16 MiB)",
            field="args",
            value=size,
        )
    return copied_args, copied_kwargs, size


def encoded_size(value: object) -> int:
    """Return the size in bytes of `value` encoded as JSON with orjson."""
    return len(orjson.dumps(value))


def is_plain_int(value: object) -> TypeGuard[int]:
    """Return whether `value` is an int and not a bool (runtime checks of typed parameters)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_text(value: object) -> bool:
    """Return whether `value` is a str with something other than blanks in it."""
    return isinstance(value, str) and bool(value.strip())


def unencodable(text: str) -> str | None:
    """Return why `text` cannot be stored (a lone surrogate: no UTF-8 for it), or None.

    Python makes such strs of bytes that are not UTF-8 (a command line's, `os.fsdecode`'s);
    SQLite and orjson refuse them with their own errors.
    """
    try:
        text.encode()
    except UnicodeEncodeError as e:
        return (
            f"{text!r} is not valid text: {e.reason} at index {e.start} (bytes that are not UTF-8?)"
        )
    return None
