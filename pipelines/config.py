"""The one way pipeline configurations are declared and validated: `@config(ErrorClass)`.

A config is a pydantic dataclass (https://docs.pydantic.dev/latest/concepts/dataclasses/): every field has a
type (`Literal` for choices), bounds where it has them (`PositiveInt`, `Annotated[float, Field(ge=0, lt=1)]`)
and a docstring, and is checked on construction. Rules between fields live in `__post_init__`, which raises
ValueError with a message starting with the field's name. Whatever fails is re-raised as the config's own
`AtlasError` subclass with a one-line message (`TrainConfig.epochs must be > 0 (got 0)`), which the CLI
prints as is and the API turns into a 4xx. Field defaults are plain class attributes (`TrainConfig.epochs`),
so the CLI takes its option defaults from them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, TypeVar, cast, dataclass_transform

import pydantic
import pydantic.dataclasses

from pipelines.errors import AtlasError

T = TypeVar("T")

_NO_EXTRA_FIELDS = pydantic.ConfigDict(extra="forbid")
"""An unknown field is an error (a typo must not fall back silently to the default)."""
_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


@dataclass_transform(field_specifiers=(pydantic.Field, dataclasses.field))
def config(error: type[AtlasError], *, frozen: bool = False) -> Callable[[type[T]], type[T]]:
    """Class decorator: a validated dataclass whose invalid arguments raise `error` (one line)."""

    def wrap(cls: type[T]) -> type[T]:
        validated = cast(
            "type[T]", pydantic.dataclasses.dataclass(cls, frozen=frozen, config=_NO_EXTRA_FIELDS)
        )
        init = validated.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                init(self, *args, **kwargs)
            except pydantic.ValidationError as exc:
                raise error(_describe(validated, exc)) from None

        validated.__init__ = __init__  # type: ignore[method-assign]
        return validated

    return wrap


def _describe(cls: type, exc: pydantic.ValidationError) -> str:
    """One line naming every invalid field of `cls`, its rule and the value given."""
    return "; ".join(_describe_one(cls, error) for error in exc.errors())


def _describe_one(cls: type, error: Any) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "value_error":  # a rule of `__post_init__`: its message starts with the field's name
        return f"{cls.__name__}.{ctx['error']}"
    field = str(error["loc"][0]) if error["loc"] else ""
    name = f"{cls.__name__}.{field}"
    got = f"(got {error['input']!r})"
    if kind in _BOUND_ERRORS:
        return f"{name} must be {_bounds(cls, field, ctx)} {got}"
    if kind == "missing":
        return f"{name} is required"
    if kind == "literal_error":
        return f"{name} must be one of {ctx['expected']} {got}"
    return f"{name}: {error['msg'][0].lower()}{error['msg'][1:]} {got}"


def _bounds(cls: type, field: str, ctx: dict) -> str:
    """`in 0..1499` or `in [0, 1)` when the field has both bounds, else the one it broke (`> 0`)."""
    info = cls.__pydantic_fields__[field]  # type: ignore[attr-defined]
    limits = {key: getattr(m, key) for m in info.metadata for key in _OPS if hasattr(m, key)}
    lower = next((key for key in ("ge", "gt") if key in limits), None)
    upper = next((key for key in ("le", "lt") if key in limits), None)
    if lower is None or upper is None:
        ((key, value),) = ctx.items()
        return f"{_OPS[key]} {value}"
    lo, hi = limits[lower], limits[upper]
    if info.annotation is int:
        return f"in {lo if lower == 'ge' else lo + 1}..{hi if upper == 'le' else hi - 1}"
    return f"in {'[' if lower == 'ge' else '('}{lo}, {hi}{']' if upper == 'le' else ')'}"
