"""The reads a save carries for its check: a mutation's versions read (S14), and their rules.

A mutation's commit carries the version it read each aggregate at (`READ_VERSIONS`); the
recorder refuses the save as a version conflict if one of them has moved on since.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from schedlog.projections.group_commit import Save

__all__ = ["READ_CONFLICT", "READ_VERSIONS", "combined_reads", "read_conflict", "read_versions"]

READ_VERSIONS = "schedlog_read_versions"
"""The `save()` keyword that carries the versions a mutation read its aggregates at ({id: version},
0 for one it found missing): the save conflicts if any of them has moved on since (S14)."""
READ_CONFLICT = "schedlog read conflict"
"""Starts the message of a save refused by its `READ_VERSIONS` (a version conflict, retried)."""


def read_versions(save: Save) -> dict[Any, int]:
    """Return the versions a save's mutation read its aggregates at (`READ_VERSIONS`), if any."""
    return save.kwargs.get(READ_VERSIONS) or {}


def read_conflict(originator_id: object, version: int) -> str:
    """Return the message of a save whose mutation read `originator_id` at `version`, now stale."""
    return (
        f"{READ_CONFLICT}: aggregate {originator_id} has changed since the mutation read it "
        f"(at version {version})"
    )


def combined_reads(
    steps: Iterable[tuple[Mapping[Any, int], Iterable[Any]]],
) -> dict[Any, int] | None:
    """Return what steps committed as one must check, or None if they cannot be one.

    `steps`: each one's reads ({id: version}) and the ids it writes, in commit order. Each
    aggregate is checked at the earliest version a step read it at. None: a step read what a
    step before it writes (it computed from the state before that write: it must commit after
    it, on its own, and conflict).
    """
    reads: dict[Any, int] = {}
    written: set[Any] = set()
    for read, writes in steps:
        if not written.isdisjoint(read):
            return None
        for aggregate_id, version in read.items():
            reads[aggregate_id] = min(version, reads.get(aggregate_id, version))
        written.update(writes)
    return reads
