"""Stored job events decoded into what `rows.change_of` takes, without domain events (read side).

Replay (`replay.py`) runs every event of the log through this: `JobEventDecoder` reads a
stored event's JSON with orjson straight into the fields `change_of` takes (no domain event,
UUID or timestamp is built).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson
from eventsourcing.persistence import JSONTranscoder, Notification
from eventsourcing.utils import resolve_topic

from schedlog.projections.rows import event_time_of

if TYPE_CHECKING:
    from eventsourcing.persistence import Mapper

__all__ = ["Fields", "JobEventDecoder", "event_time", "job_id_of"]

Fields = tuple[type, str, int, dict[str, Any]]
"""A job event as `change_of` takes it: its class, job id, version and fields."""


def event_time(event: object) -> int | None:
    """Return an event's domain time in ms (when it happened, by the App's clock)."""
    return event_time_of(type(event), vars(event)) if hasattr(event, "__dict__") else None


def job_id_of(originator_id: object) -> str:
    """Return a job's id (its UUID as text) from the log's originator id (`UUID.hex` in SQLite)."""
    if isinstance(originator_id, str) and len(originator_id) == 32:  # noqa: PLR2004 - a UUID.hex
        h = originator_id
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return str(originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id)))


class JobEventDecoder:
    """Decode stored job events into what `change_of` takes, without building domain events.

    The mapper's JSON transcoder calls a Python hook on every JSON object, parses the
    timestamp and builds a UUID and an event object; the view needs none of that. A job
    event's state holds one transcoded value, its timestamp, which the view does not use, so
    its JSON is read with orjson and upcast with the event class's own upcasters. Anything
    else (another transcoded value, JSON orjson refuses, a cipher or a compressor) goes
    through the mapper, so both paths give the same fields.
    """

    def __init__(self, mapper: Mapper[Any]) -> None:
        self._mapper = mapper
        self._plain = (
            mapper.cipher is None
            and mapper.compressor is None
            and isinstance(mapper.transcoder, JSONTranscoder)
        )
        self._classes: dict[str, tuple[type, int]] = {}

    def decode(self, nid: int, oid: Any, version: int, topic: str, state: bytes) -> Fields:
        """Decode one stored event, given its notification's fields."""
        if self._plain and state.count(b'"_type_"') == 1:
            try:
                fields = orjson.loads(state)
            except orjson.JSONDecodeError:
                pass
            else:
                if isinstance(fields, dict) and isinstance(fields.get("timestamp"), dict):
                    return self._upcast(topic, oid, version, fields)
        notification = Notification(
            id=nid,
            originator_id=oid if isinstance(oid, UUID) else UUID(oid),
            originator_version=version,
            topic=topic,
            state=state,
        )
        event: Any = self._mapper.to_domain_event(notification)
        return type(event), str(event.originator_id), event.originator_version, vars(event)

    def _upcast(self, topic: str, oid: Any, version: int, fields: dict[str, Any]) -> Fields:
        known = self._classes.get(topic)
        if known is None:
            cls = resolve_topic(topic)
            known = self._classes[topic] = (cls, getattr(cls, "class_version", 1))
        cls, class_version = known
        from_version = fields.pop("class_version", 1)
        while from_version < class_version:  # as the mapper does
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(fields)
            from_version += 1
        return cls, job_id_of(oid), version, fields
