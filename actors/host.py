"""What the runner asks of the App, and what a run of a user's function gives back (runtime)."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from uuid import UUID

    from schedlog.actors.ports import Clock
    from schedlog.events import FunctionKind, ScheduledFunction

__all__ = ["ExecutionHost", "Invocation", "describe_error"]


def describe_error(error: BaseException) -> str:
    """Return the message, then the traceback, as `state.error` carries it (S1).

    Storable as it is in every store: a NUL (PostgreSQL's text refuses it) is written as the
    four characters of its escape, and so is a lone surrogate (UTF-8 has none; say a file
    name's undecodable byte).
    """
    message = "".join(traceback.format_exception_only(error)).strip()
    text = f"{message}\n\n{''.join(traceback.format_exception(error)).rstrip()}"
    text = text.replace("\x00", "\\x00")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode(errors="backslashreplace").decode()
    return text


@dataclass(frozen=True, slots=True)
class Invocation:
    """What running a user function produced: its error, or the writes it staged (mutations)."""

    error: str | None
    staged: Sequence[Any] = ()
    reads: Mapping[UUID, int] = field(default_factory=dict)
    """The versions a mutation read aggregates at, for its commit to check (S14)."""


class ExecutionHost(Protocol):
    """What the runner needs from the App: the store, the registry and the contexts."""

    clock: Clock
    node_id: str
    lease_ms: int

    def load_job(self, job_id: str) -> ScheduledFunction | None:
        """Return the job's aggregate, freshly read, or None if it does not exist."""

    def load_jobs(self, job_ids: Sequence[str]) -> dict[str, ScheduledFunction]:
        """Return the jobs among `job_ids` that exist, freshly read (in one query)."""

    def version_of(self, job_id: str) -> int | None:
        """Return the version of the job's last event in the store, or None if it has none."""

    def save(self, *objs: Any, reads: Mapping[UUID, int] | None = None) -> None:
        """Save aggregates atomically and tell the timer of new pending jobs.

        Raises `ConflictError` on a version conflict (also if an aggregate in `reads` has
        moved past the version given) and `StoreError` on other store errors.
        """

    def kind_of(self, name: str) -> FunctionKind | None:
        """Return how the function registered as `name` runs, or None if it is not registered."""

    def invoke(self, job: ScheduledFunction, now_ms: int) -> Invocation:
        """Run the job's function with a fresh context; never raises for the function's errors."""

    def backing_off(self, job_id: str, until_ms: int) -> None:
        """Tell the timer that `job_id`'s executor waits for the store until `until_ms`."""
