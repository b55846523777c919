"""The leaf checks of :mod:`gateway.schema`: one value against a literal or scalar type, and against bounds.

Why a module of its own: :mod:`gateway.schema` walks models, unions, tuples and dicts and collects every
problem with its path; what it reaches at the end of each path is a single value to convert (a quoted
whole number to an int, a string to a Path or a Decimal, ...) and to hold to its field's ``ge``/``le``,
lengths and pattern. Those rules know nothing of models or paths, so they live here, each raising
:class:`Invalid` with pydantic's error type and message (what installers read, and what hints
are keyed on), for the walk to record where it stands.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import re
import typing
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

__all__ = ["Constraints", "Invalid", "constrain", "convert_leaf", "literal_text"]


@dataclasses.dataclass(frozen=True)
class Constraints:
    """Bounds and patterns of one field or annotated type (pydantic's ``Field`` keywords)."""

    ge: float | Decimal | None = None
    gt: float | Decimal | None = None
    le: float | Decimal | None = None
    lt: float | Decimal | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    strict: bool | None = None
    strip_whitespace: bool = False
    discriminator: str | None = None
    """For a union of models: the key whose value (each model's Literal default) picks the model."""


class Invalid(Exception):
    """One value's problem, as pydantic names it (``kind`` is its error type); the walk adds the path."""

    def __init__(self, kind: str, msg: str, value: Any, ctx: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.kind, self.msg, self.value, self.ctx = kind, msg, value, ctx


def literal_text(values: tuple[Any, ...]) -> str:
    shown = [repr(v) for v in values]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def convert_leaf(hint: Any, value: Any, strict: bool, rules: Constraints) -> Any:
    """``value`` as ``hint`` (a Literal, bool, int, float, str, Path, Decimal, date or enum), lax unless ``strict``.

    Raises Invalid when it is not one; TypeError for a hint no model should declare.
    """
    if typing.get_origin(hint) is Literal:
        allowed = typing.get_args(hint)
        for option in allowed:
            if value == option and type(value) is type(option):
                return option
        raise Invalid("literal_error", f"Input should be {literal_text(allowed)}", value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if not strict and isinstance(value, int) and value in (0, 1):
            return bool(value)
        if not strict and isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        raise Invalid("bool_type", "Input should be a valid boolean", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if not strict and isinstance(value, float):
            if value.is_integer():
                return int(value)
            raise Invalid("int_from_float", "Input should be a valid integer, got a number with a fractional part",
                          value)
        if not strict and isinstance(value, str):
            return _parsed(value, int, "int_parsing",
                           "Input should be a valid integer, unable to parse string as an integer")
        raise Invalid("int_type", "Input should be a valid integer", value)
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if not strict and isinstance(value, str):
            return _parsed(value, float, "float_parsing",
                           "Input should be a valid number, unable to parse string as a number")
        raise Invalid("float_type", "Input should be a valid number", value)
    if hint is str:
        if isinstance(value, str):
            return value.strip() if rules.strip_whitespace else value
        raise Invalid("string_type", "Input should be a valid string", value)
    if hint is Path:
        if isinstance(value, Path):
            return value
        if isinstance(value, str):
            return Path(value)
        raise Invalid("path_type", "Input is not a valid path", value)
    if hint is Decimal:
        if isinstance(value, Decimal):
            return value
        if isinstance(value, int | str) and not isinstance(value, bool):
            try:
                number = Decimal(value.strip() if isinstance(value, str) else value)
            except InvalidOperation:
                raise Invalid("decimal_parsing", "Input should be a valid decimal", value) from None
            if not number.is_finite():
                raise Invalid("finite_number", "Input should be a finite number", value)
            return number
        raise Invalid("decimal_type", "Decimal input should be an integer, float, string or Decimal object", value)
    if hint is _dt.date:
        if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return _dt.date.fromisoformat(value)
            except ValueError as exc:
                raise Invalid("date_from_datetime_parsing", f"Input should be a valid date (YYYY-MM-DD), {exc}",
                              value) from None
        raise Invalid("date_type", "Input should be a valid date", value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if isinstance(value, hint):
            return value
        if not strict:
            try:
                return hint(value)
            except ValueError:
                pass
        raise Invalid("enum", f"Input should be {literal_text(tuple(m.value for m in hint))}", value)
    raise TypeError(f"gateway.schema cannot check {hint!r}")  # a model declares a type this module lacks


def _parsed(value: str, parse: Callable[[str], Any], kind: str, msg: str) -> Any:
    """A number from a string (lax mode): surrounding blanks ignored, anything else unparsable is ``kind``."""
    try:
        return parse(value.strip())
    except ValueError:
        raise Invalid(kind, msg, value) from None


_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False, "1": True,
               "0": False, "t": True, "f": False, "y": True, "n": False}


_BOUNDS = (("gt", "greater_than", "greater than"), ("ge", "greater_than_equal", "greater than or equal to"),
           ("lt", "less_than", "less than"), ("le", "less_than_equal", "less than or equal to"))


def _within(name: str, value: Any, bound: Any) -> bool:
    return bool(value > bound if name == "gt" else value >= bound if name == "ge" else
                value < bound if name == "lt" else value <= bound)


def constrain(value: Any, rules: Constraints) -> None:
    """Raises Invalid for the first bound, length or pattern of ``rules`` that a converted value breaks."""
    if value is None:
        return
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        for name, kind, text in _BOUNDS:
            bound = getattr(rules, name)
            if bound is not None and not _within(name, value, bound):
                raise Invalid(kind, f"Input should be {text} {bound}", value, {name: bound})
    if isinstance(value, str):
        if rules.min_length is not None and len(value) < rules.min_length:
            s = "" if rules.min_length == 1 else "s"
            raise Invalid("string_too_short", f"String should have at least {rules.min_length} character{s}", value,
                          {"min_length": rules.min_length})
        if rules.max_length is not None and len(value) > rules.max_length:
            s = "" if rules.max_length == 1 else "s"
            raise Invalid("string_too_long", f"String should have at most {rules.max_length} character{s}", value,
                          {"max_length": rules.max_length})
        if rules.pattern is not None and not _compiled(rules.pattern).search(value):
            raise Invalid("string_pattern_mismatch", f"String should match pattern '{rules.pattern}'", value,
                          {"pattern": rules.pattern})
    elif isinstance(value, tuple | Mapping):
        what = "Tuple" if isinstance(value, tuple) else "Dictionary"
        if rules.min_length is not None and len(value) < rules.min_length:
            s = "" if rules.min_length == 1 else "s"
            raise Invalid("too_short", f"{what} should have at least {rules.min_length} item{s} after validation, "
                          f"not {len(value)}", value, {"min_length": rules.min_length})
        if rules.max_length is not None and len(value) > rules.max_length:
            s = "" if rules.max_length == 1 else "s"
            raise Invalid("too_long", f"{what} should have at most {rules.max_length} item{s} after validation, "
                          f"not {len(value)}", value, {"max_length": rules.max_length})


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    found = _PATTERNS.get(pattern)
    if found is None:
        found = _PATTERNS[pattern] = re.compile(pattern)
    return found
