"""The small interface every system implements for the suite's one set of workload drivers.

A `System` makes stores and knows how to run its worker in another process; a `Client` is this
process's handle on one store: it schedules the job body (`bench._common.record`) one durable
call at a time, cancels, can run the worker inside this process, and tells what it knows of
the jobs' states.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from bench._common import WorkerSpec


class Client(abc.ABC):
    """One store, opened in this process; the worker does not run here unless started."""

    @abc.abstractmethod
    def schedule(self, sink: str, index: int, due_ms: int | None) -> Any:
        """Schedule `record(sink, index)` at `due_ms`, epoch ms (None: now); durable on return.

        Returns the handle `cancel` and `states` take. Safe to call from several threads.
        """

    @abc.abstractmethod
    def cancel(self, handle: Any) -> None:
        """Cancel a scheduled job, one durable call."""

    @abc.abstractmethod
    def start_worker(self) -> None:
        """Run the worker (4 slots) inside this process, on this client's store."""

    @abc.abstractmethod
    def stop_worker(self) -> None:
        """Stop the in-process worker gracefully."""

    @abc.abstractmethod
    def unfinished(self) -> int:
        """How many jobs the store still holds as waiting or running."""

    @abc.abstractmethod
    def states(self, handles: Sequence[Any]) -> list[str]:
        """The state of each job (in the order of `handles`), as far as the system can tell."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop anything running here and close the store."""


class System(abc.ABC):
    """A scheduler under test: its stores, its clients and its worker process."""

    family: str
    """schedlog, huey or apscheduler (what `--systems` selects)."""
    label: str
    """The row label (a family may have several, e.g. schedlog's actions and mutations)."""
    settings: str
    """How it is configured, for the report."""

    @abc.abstractmethod
    def store_file(self, directory: Path) -> Path:
        """The SQLite file of a store in `directory`."""

    @abc.abstractmethod
    def client(self, store: Path) -> Client:
        """Open (creating if need be) the store at `store`."""

    @abc.abstractmethod
    def worker(self, store: Path, env: dict[str, str] | None = None) -> WorkerSpec:
        """How to run a worker process with 4 slots on `store`."""
