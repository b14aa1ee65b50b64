"""Validating user files (scenarios, matrices, bundles) with pydantic, reported the harness's way: one
line, `FILE: key.path: problem`, as an InputError (exit 2).

Models derive from `Strict`: no type coercion ("2" is not an int, 1 is not a bool), unknown keys are
errors naming the allowed ones, and a model may accept a shorthand (`memtouch: 256M`) through
`_shorthand`.  Validators raise `problem(...)`, which can point below their own position (`at`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from harness.errors import InputError

UNKNOWN_KEY = "harness_unknown_key"
PROBLEM = "harness_problem"

M = TypeVar("M", bound=BaseModel)


def problem(message: str, *at: str | int) -> PydanticCustomError:
    """An error for a validator to raise; `at` continues the key path below the validator's position."""
    return PydanticCustomError(PROBLEM, "{problem}", {"problem": message, "at": at})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    # The key a bare scalar stands for (`balloon: 1G` means `balloon: {target: 1G}`); None: no shorthand.
    shorthand: ClassVar[str | None] = None

    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if cls.shorthand is not None and not isinstance(data, dict | type(None)):
            return {cls.shorthand: data}
        return data

    @classmethod
    def keys(cls) -> list[str]:
        return [f.alias or name for name, f in cls.model_fields.items()]

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        data = cls._shorthand(data)
        if data is None and not any(f.is_required() for f in cls.model_fields.values()):
            return {}
        if isinstance(data, BaseModel):
            return data
        if not isinstance(data, dict):
            raise problem(f"expected a mapping, got {type(data).__name__}")
        allowed = cls.keys()
        for key in data:
            if key not in allowed:
                raise PydanticCustomError(UNKNOWN_KEY, "unknown key (allowed: {allowed})",
                                          {"allowed": ", ".join(allowed), "key": str(key)})
        return data


def format_loc(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top)"


def _type_problem(error: ErrorDetails) -> str | None:
    value = error.get("input")
    kind = error["type"]
    ctx = error.get("ctx") or {}
    expected = {"int_type": "int", "bool_type": "bool", "string_type": "str", "float_type": "int or float",
                "list_type": "a list"}
    if kind in expected:
        return f"expected {expected[kind]}, got {value!r}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {type(value).__name__}"
    if kind == "missing":
        return "missing"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {value!r}"
    if kind == "greater_than":
        return f"must be more than {ctx.get('gt')}, got {value!r}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}, got {value!r}"
    if kind == "less_than":
        return f"must be less than {ctx.get('lt')}, got {value!r}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    return None


def first_problem(exc: ValidationError) -> tuple[tuple[str | int, ...], str, bool]:
    """(key path, problem, is an unknown key) of the first error pydantic found."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    if error["type"] == UNKNOWN_KEY:
        return loc + (ctx["key"],), error["msg"], True
    if error["type"] == PROBLEM:
        return loc + tuple(ctx.get("at", ())), ctx["problem"], False
    return loc, _type_problem(error) or error["msg"], False


def validate(model: type[M], data: Any, source: object) -> M:
    """`model` from `data`, or an InputError `SOURCE: key.path: problem`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        loc, message, _ = first_problem(exc)
        raise InputError(f"{source}: {format_loc(loc)}: {message}") from None


def one_of(values: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in values:
            raise problem(f"{value!r} is not one of {', '.join(values)}")
        return value
    return check


def matching(pattern: re.Pattern, what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise problem(f"{value!r} must be {what}")
        return value
    return check
