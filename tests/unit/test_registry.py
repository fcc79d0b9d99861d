"""Registration's checks of a call's arguments: the fast path agrees with `Signature.bind`."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from schedlog import ArgsMismatchError
from schedlog.events import FunctionKind
from schedlog.registry import Registry


def _plain(ctx: object, a: int, b: int) -> None:
    del ctx, a, b


def _defaults(ctx: object, a: int, b: int = 2) -> None:
    del ctx, a, b


def _star(ctx: object, *args: Any, **kwargs: Any) -> None:
    del ctx, args, kwargs


def _keyword_only(ctx: object, a: int, *, b: int) -> None:
    del ctx, a, b


def _positional_only(ctx: object, a: int, /) -> None:
    del ctx, a


FUNCTIONS = [_plain, _defaults, _star, _keyword_only, _positional_only, functools.partial(_plain)]
CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),
    ((1,), {}),
    ((1, 2), {}),
    ((1, 2, 3), {}),
    ((1,), {"b": 2}),
    ((), {"a": 1, "b": 2}),
    ((1,), {"ctx": 0}),
]


@pytest.mark.parametrize("fn", FUNCTIONS, ids=repr)
@pytest.mark.parametrize(("args", "kwargs"), CALLS, ids=repr)
def test_a_call_is_refused_exactly_when_python_could_not_make_it(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    registered = Registry().add(fn, FunctionKind.ACTION, name="jobs:f")
    try:
        fn(None, *args, **kwargs)
    except TypeError:
        with pytest.raises(ArgsMismatchError, match="'jobs:f' cannot be called"):
            registered.check_call(args, kwargs)
    else:
        registered.check_call(args, kwargs)


def test_the_fast_path_is_taken_only_for_plain_required_parameters() -> None:
    arities = [Registry().add(f, FunctionKind.ACTION, name="jobs:f").arity for f in FUNCTIONS]
    assert arities == [2, -1, -1, -1, 1, 2]
