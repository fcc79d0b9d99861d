"""A mutation's reads of the app's own aggregates, checked by its commit (front door, S14)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsourcing.application import AggregateNotFoundError

if TYPE_CHECKING:
    from uuid import UUID

    from eventsourcing.application import Repository
    from eventsourcing.domain import BaseAggregate

__all__ = ["MutationReads"]


class MutationReads:
    """A mutation's `ctx.repository`: the store's repository, read as the commit will see it.

    `get` returns the copy of an aggregate this mutation has staged with `ctx.save` (it reads
    its own writes), and otherwise the stored one, noting the version it read. The commit
    checks those versions under the store's write lock: if another writer moved one of them
    meanwhile, the commit is a version conflict and the mutation runs again (S14, S15), as if
    it had saved that aggregate. A read of a past `version` is not noted (it cannot change).
    Anything else is the library's `Repository`'s.
    """

    def __init__(
        self, repository: Repository[UUID], staged: dict[object, BaseAggregate[Any]]
    ) -> None:
        self._repository = repository
        self._staged = staged
        self.versions: dict[UUID, int] = {}
        """Each aggregate read at its latest version: that version (0: it did not exist)."""

    def get(self, aggregate_id: UUID, *, version: int | None = None, **kwargs: Any) -> Any:
        """Return the aggregate: as staged by this mutation, or as stored (see the class)."""
        if version is None and aggregate_id in self._staged:
            return self._staged[aggregate_id]
        try:
            aggregate = self._repository.get(aggregate_id, version=version, **kwargs)
        except AggregateNotFoundError:
            if version is None:
                self.versions.setdefault(aggregate_id, 0)
            raise
        if version is None:
            self.versions.setdefault(aggregate_id, aggregate.version)
        return aggregate

    def __contains__(self, aggregate_id: object) -> bool:
        """Tell whether the aggregate exists (staged or stored); a read, as `get` is."""
        try:
            self.get(aggregate_id)  # type: ignore[arg-type]
        except AggregateNotFoundError:
            return False
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repository, name)
