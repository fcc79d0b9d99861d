"""The @app.mutation / @app.action registrations and lookup by name (front door)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from schedlog.errors import ArgsMismatchError, ConfigurationError, UnknownFunctionError
from schedlog.events.validation import is_text, unencodable

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from schedlog.events import FunctionKind

__all__ = ["Registered", "Registry", "default_name", "refuse_unrun"]


@dataclass(frozen=True, slots=True)
class Registered:
    """A registered function: its stable name, how it runs, and the callable."""

    name: str
    kind: FunctionKind
    fn: Callable[..., Any]
    signature: inspect.Signature | None = field(default=None, compare=False)
    """`fn`'s parameters, if Python can tell them (not for some built-ins)."""
    arity: int = field(default=-1, compare=False)
    """How many positional arguments after the context certainly fit, without keywords (all
    its parameters then plain and required); -1 if none is sure."""

    def check_call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Refuse arguments `fn(ctx, *args, **kwargs)` could not be called with (S8, S9).

        A job scheduled with them would be accepted only to fail when it runs. The usual call
        (as many positional arguments as the function has parameters) skips `bind` (9 us).
        """
        if self.signature is None or (len(args) == self.arity and not kwargs):
            return
        try:
            self.signature.bind(None, *args, **kwargs)
        except TypeError as error:
            raise ArgsMismatchError(
                f"{self.name!r} cannot be called with these arguments: {error} "
                f"(its parameters: {self.signature}; the first is the context)",
                field="args",
            ) from None


def _never_runs(fn: Callable[..., Any]) -> bool:
    """Tell whether calling `fn` only makes a coroutine or generator (its body never runs)."""
    call: object = fn
    if not (inspect.isroutine(fn) or isinstance(fn, (functools.partial, type))):
        call = getattr(fn, "__call__", fn)  # an object's: `async def __call__` included  # noqa: B004
    return (
        inspect.iscoroutinefunction(call)
        or inspect.isgeneratorfunction(call)
        or inspect.isasyncgenfunction(call)
    )


def refuse_unrun(name: str, result: object) -> None:
    """Raise if a function returned a coroutine: nothing awaits it, so its body never runs.

    Registration refuses async and generator functions; this catches what it cannot tell
    (a wrapper that returns a coroutine). A generator returned by a function whose body ran
    is a value like any other.
    """
    if inspect.iscoroutine(result):
        result.close()  # no "coroutine was never awaited" warning: the error says it
        raise ConfigurationError(
            f"{name!r} returned a coroutine, which nothing awaits: async functions are not "
            "supported; register a plain function (one that calls asyncio.run, say)"
        )


def _signature_of(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        # What Python binds when it calls `fn`: not the function a `functools.wraps` wrapper
        # wraps, whose parameters the wrapper may add to or take from.
        return inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):  # some built-ins and C callables have none to read
        return None


_PLAIN = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _arity(signature: inspect.Signature | None) -> int:
    """Return `Registered.arity` for `signature`."""
    if signature is None:
        return -1
    params = list(signature.parameters.values())
    if not params or any(p.kind not in _PLAIN or p.default is not p.empty for p in params):
        return -1
    return len(params) - 1


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
        if _never_runs(fn):
            raise ConfigurationError(
                f"{fn!r} is an async or generator function: calling it only makes a coroutine "
                "or generator object, so its body would never run; register a plain function "
                "(one that calls asyncio.run, say)"
            )
        if name is None:
            if not isinstance(getattr(fn, "__qualname__", None), str):
                raise ConfigurationError(
                    f"{fn!r} has no name of its own (a functools.partial, an object with "
                    "__call__): register it with name=..."
                )
            name = default_name(fn)
        if not isinstance(name, str) or not is_text(name):
            raise ConfigurationError(f"a function name must be a non-empty str, got {name!r}")
        if (why := unencodable(name)) is not None:
            raise ConfigurationError(f"a function name must be storable: {why}")
        signature = _signature_of(fn)
        entry = Registered(name, kind, fn, signature, _arity(signature))
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
