"""The store's transcoder: eventsourcing's JSON format, written and read by orjson (write side).

`JSONTranscoder` runs the stdlib encoder with a Python `default` hook for every tagged value
(each event's timestamp at least) and decodes with a Python hook on every JSON object: about
8 us to encode and 3 us to decode one job event, paid by every schedule, claim and outcome.
orjson writes and reads the same JSON several times faster, but it writes some values
differently (a UUID as a bare string, NaN as null, any dataclass or enum natively), so it is
used only for values made of plain JSON types and datetimes (tagged by the same hook as the
stdlib's). Anything else (a UUID in a job's arguments, a user event's Decimal, a tuple, a
subclass) goes the library's way. Both write the same JSON (byte for byte, but for the
spelling of some floats: `1e-7`, not `1e-07`) and read back the same values
(tests/unit/projections/test_transcoder.py), so a store mixes them freely and either reads it.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder

__all__ = ["OrjsonTranscoder"]

_SCALARS = frozenset({str, int, bool, type(None), dt.datetime})
_TAG = b'"_type_"'
_DIGITS = bytes.maketrans(b"012345678", b"999999999")
_LONG_NUMBER = b"9" * 19
"""19 digits in a row: maybe an int past 64 bits, which orjson reads as a float without a word
(2**64 as 1.8446744073709552e+19). Such data goes to the stdlib, which reads it exactly."""


def _plain(value: object) -> bool:
    """Tell whether orjson writes `value` as the stdlib would (datetimes tagged by the hook).

    Scalars are checked in the loops, not by a call each: an event's state is mostly scalars.
    """
    kind = type(value)
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or not (type(item) in _SCALARS or _plain(item)):
                return False
        return True
    if kind is list:
        return all(type(item) in _SCALARS or _plain(item) for item in value)  # type: ignore[attr-defined]
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    return kind in _SCALARS


class OrjsonTranscoder(JSONTranscoder):
    """`JSONTranscoder`'s format and transcodings, through orjson where it writes the same."""

    def encode(self, obj: Any) -> bytes:
        """Encode `obj` as `JSONTranscoder.encode` does (same bytes where orjson is used)."""
        if _plain(obj):
            try:
                return orjson.dumps(
                    obj, default=self._encode_obj, option=orjson.OPT_PASSTHROUGH_DATETIME
                )
            except orjson.JSONEncodeError:  # an int past 64 bits, a lone surrogate
                pass
        return super().encode(obj)

    def decode(self, data: bytes) -> Any:
        """Decode what either transcoder wrote.

        An event whose only tagged value is its top-level timestamp (every job event whose
        arguments hold no UUID or datetime) and without 19 digits in a row is read by orjson
        and that one value revived; anything else by the library, which revives tags wherever
        they are and reads an int of any size as an int.
        """
        if data.count(_TAG) == 1 and _LONG_NUMBER not in data.translate(_DIGITS):
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:  # NaN, say: the stdlib reads it
                return super().decode(data)
            stamp = obj.get("timestamp") if type(obj) is dict else None
            if type(stamp) is dict and len(stamp) == 2 and "_data_" in stamp:  # noqa: PLR2004
                obj["timestamp"] = self._decode_obj(stamp)
                return obj
        return super().decode(data)
