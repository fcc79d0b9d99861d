"""The @app.mutation / @app.action registrations and lookup by name (front door)."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from schedlog.errors import ConfigurationError, UnknownFunctionError
from schedlog.events.validation import is_text

if TYPE_CHECKING:
    from collections.abc import Callable

    from schedlog.events import FunctionKind

__all__ = ["Registered", "Registry", "default_name"]


@dataclass(frozen=True, slots=True)
class Registered:
    """A registered function: its stable name, how it runs, and the callable."""

    name: str
    kind: FunctionKind
    fn: Callable[..., Any]


def default_name(fn: Callable[..., Any]) -> str:
    """Return `<module>:<qualname>`, the name a function is registered under by default."""
    return f"{fn.__module__}:{fn.__qualname__}"


class Registry:
    """Names to functions and back; thread-safe."""

    def __init__(self) -> None:
        self._by_name: dict[str, Registered] = {}
        self._by_fn: dict[Callable[..., Any], Registered] = {}
        self._lock = threading.Lock()

    def add(self, fn: Callable[..., Any], kind: FunctionKind, name: object) -> Registered:
        """Register `fn`; a name already taken by another function is an error."""
        if not callable(fn):
            raise ConfigurationError(f"only functions can be registered, got {fn!r}")
        if name is None:
            if not isinstance(getattr(fn, "__qualname__", None), str):
                raise ConfigurationError(
                    f"{fn!r} has no name of its own (a functools.partial, an object with "
                    "__call__): register it with name=..."
                )
            name = default_name(fn)
        if not isinstance(name, str) or not is_text(name):
            raise ConfigurationError(f"a function name must be a non-empty str, got {name!r}")
        entry = Registered(name, kind, fn)
        with self._lock:
            existing = self._by_name.get(name)
            if existing is not None and existing != entry:
                raise ConfigurationError(
                    f"{name!r} is already registered as {existing.kind} {existing.fn!r}"
                )
            self._by_name[name] = entry
            with contextlib.suppress(TypeError):  # unhashable: found by its name only
                self._by_fn[fn] = entry
        return entry

    def get(self, name: str) -> Registered | None:
        """Return the function registered as `name`, or None."""
        return self._by_name.get(name)

    def resolve(self, ref: object) -> Registered:
        """Return the registration of a function object or name, or raise UnknownFunctionError."""
        if isinstance(ref, str):
            found = self._by_name.get(ref)
            if found is None:
                raise UnknownFunctionError(ref)
            return found
        if callable(ref):
            try:
                return self._by_fn[ref]
            except (KeyError, TypeError):
                raise UnknownFunctionError(
                    default_name(ref) if hasattr(ref, "__qualname__") else repr(ref)
                ) from None
        raise UnknownFunctionError(repr(ref))
