"""A small validator for the configuration file and firmware profiles, in place of pydantic.

Why: the daemon's memory is mostly imported code, and pydantic (its core and the schemas it builds
for every model) cost a 16-meter RTU daemon about 13 MiB of its ~60 MiB. What the configuration and
the profiles need of it is small: frozen records that refuse unknown keys, numeric bounds, string
patterns, literals, nested records and tuples, and *every* problem reported with its path, so that
``check-config`` can name each one with its line. That is this module: frozen dataclasses
(``Model`` subclasses, declared like pydantic models with :func:`Field`) checked by walking their type
hints. Error types and messages are pydantic's (``missing``, "Field required"; ``extra_forbidden``,
"Extra inputs are not permitted"; ...), so what installers read and the hints keyed on those types
stay the same. This module is the walk (models, unions, tuples, dicts, each problem recorded with its
path); the leaf checks it ends in (a value against a scalar type or a literal, then its bounds) are
:mod:`gateway.schema_types`.

Sections the daemon seldom has are named *lazily* (:class:`Lazy`), so their modules are imported only
when the file has them; ``[p2p]`` and ``[soroban]`` are still pydantic models, whose errors join the
same list.

Lax like pydantic's default mode, unless a model or field says ``strict``: a quoted whole number is
accepted for an int, an int for a float; strict refuses strings for numbers and lists for tuples.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import importlib
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, dataclass_transform

from gateway.schema_types import Constraints, Invalid, constrain, convert_leaf

__all__ = [
    "BeforeValidator",
    "Field",
    "FieldError",
    "Lazy",
    "Model",
    "Strict",
    "StringConstraints",
    "ValidationError",
    "ValidationInfo",
    "field_validator",
    "lazy_model",
    "model_validator",
]

Loc = tuple[str | int, ...]
M = TypeVar("M", bound="Model")


class ValidationError(ValueError):
    """Every problem found in one input; ``errors()`` lists them as pydantic does (loc, msg, type, input, ctx)."""

    def __init__(self, title: str, errors: list[dict[str, Any]]) -> None:
        self.title = title
        self._errors = errors
        lines = "\n".join(f"  {_dotted(e['loc'])}: {e['msg']}" for e in errors)
        super().__init__(f"{len(errors)} validation error(s) for {title}\n{lines}")

    def errors(self, *, include_url: bool = False) -> list[dict[str, Any]]:  # same calls as pydantic's
        return list(self._errors)

    def error_count(self) -> int:
        return len(self._errors)


class FieldError(ValueError):
    """A validator's problem with its own error type and context, as pydantic's ``PydanticCustomError``:
    ``check-config`` shows ``ctx["hint"]`` as the hint (a plain ValueError is a ``value_error``)."""

    def __init__(self, kind: str, msg: str, ctx: dict[str, Any] | None = None) -> None:
        super().__init__(msg)
        self.kind, self.ctx = kind, ctx


def _dotted(loc: Loc) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


@dataclasses.dataclass(frozen=True)
class BeforeValidator:
    """``Annotated[Decimal, BeforeValidator(fn)]``: ``fn(raw) -> raw`` runs first; a ValueError is the field's error."""

    func: Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class Strict:
    """``Annotated[float, Strict()]``: no string for a number."""

    strict: bool = True


class Lazy:
    """Stands for a model that is imported only when the input has a value for it (see :func:`lazy_model`)."""

    module: ClassVar[str]
    name: ClassVar[str]

    @classmethod
    def load(cls) -> Any:
        return getattr(importlib.import_module(cls.module), cls.name)


def lazy_model(module: str, name: str) -> type[Lazy]:
    """A stand-in for ``module.name`` in annotations, loaded when a value is checked against it.

    Declare it where the type checker sees the real class::

        if TYPE_CHECKING:
            from gateway.config.stellar import StellarConfig
        else:
            StellarConfig = lazy_model("gateway.config.stellar", "StellarConfig")

    The model may be a pydantic one; its errors are reported with the field's path in front.
    """
    return type(name, (Lazy,), {"module": module, "name": name, "__module__": __name__})


def Field(default: Any = dataclasses.MISSING, *, default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
          description: str = "", ge: float | None = None, gt: float | None = None, le: float | None = None,
          lt: float | None = None, min_length: int | None = None, max_length: int | None = None,
          pattern: str | None = None, strict: bool | None = None, discriminator: str | None = None) -> Any:
    """A field with a default and constraints, as pydantic's ``Field`` (also usable inside ``Annotated``)."""
    rules = Constraints(ge=ge, gt=gt, le=le, lt=lt, min_length=min_length, max_length=max_length,
                        pattern=pattern, strict=strict, discriminator=discriminator)
    meta = {"rules": rules, "description": description}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def StringConstraints(*, strip_whitespace: bool = False, min_length: int | None = None,
                      max_length: int | None = None, pattern: str | None = None) -> Constraints:
    return Constraints(min_length=min_length, max_length=max_length, pattern=pattern, strip_whitespace=strip_whitespace)


@dataclasses.dataclass(frozen=True)
class ValidationInfo:
    """What a field validator sees of its model: the fields before it that passed (``data``)."""

    data: Mapping[str, Any]


F = TypeVar("F", bound=Callable[..., Any])


def field_validator(*names: str) -> Callable[[F], F]:
    """Check or normalise fields once their type is right: ``(cls, value[, info]) -> value``; raise ValueError."""
    def mark(fn: F) -> F:
        target = fn.__func__ if isinstance(fn, classmethod) else fn
        target.__schema_fields__ = names  # type: ignore[attr-defined]
        return fn
    return mark


def model_validator(*, mode: Literal["before", "after"]) -> Callable[[F], F]:
    """``before``: ``(cls, data) -> data`` on the raw mapping; ``after``: ``(self) -> self`` once every field passed."""
    def mark(fn: F) -> F:
        target = fn.__func__ if isinstance(fn, classmethod) else fn
        target.__schema_mode__ = mode  # type: ignore[attr-defined]
        return fn
    return mark


@dataclasses.dataclass
class _FieldSpec:
    name: str
    hint: Any
    rules: Constraints
    has_default: bool
    default: Any
    factory: Any


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(Field, dataclasses.field))
class Model:
    """A frozen record that checks its input: unknown keys refused, every problem reported at once."""

    model_strict: ClassVar[bool] = False
    model_fields: ClassVar[dict[str, dataclasses.Field[Any]]]
    __specs: ClassVar[list[_FieldSpec] | None]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, kw_only=True)(cls)
        cls._raw_init = cls.__init__  # type: ignore[attr-defined]
        cls.__init__ = _validating_init  # type: ignore[assignment,method-assign]
        cls.model_fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        cls.__specs = None

    @classmethod
    def model_validate(cls: type[M], data: Any) -> M:
        errors: list[dict[str, Any]] = []
        value = _validate_model(cls, data, (), errors)
        if errors:
            raise ValidationError(cls.__name__, errors)
        return typing.cast(M, value)

    def model_copy(self: M, *, update: Mapping[str, Any] | None = None) -> M:
        """A copy with some fields replaced, unchecked (as pydantic's)."""
        new = object.__new__(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            object.__setattr__(new, f.name, getattr(self, f.name))
        for key, value in (update or {}).items():
            object.__setattr__(new, key, value)
        return new

    def model_dump(self, *, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        """The fields as a dict, nested records too; ``mode="json"`` as pydantic's: decimals, dates and paths
        as strings, tuples as lists (tariff fingerprints of issued bills are hashes of that form)."""
        return {f.name: _dump(getattr(self, f.name), mode == "json")
                for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def model_dump_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def model_validate_json(cls: type[M], text: str | bytes) -> M:
        return cls.model_validate(json.loads(text))

    @classmethod
    def _specs(cls) -> list[_FieldSpec]:
        specs = cls.__dict__.get("_Model__specs")
        if specs is None:
            hints = typing.get_type_hints(cls, include_extras=True)
            specs = []
            for f in dataclasses.fields(cls):  # type: ignore[arg-type]
                rules = f.metadata.get("rules", Constraints())
                specs.append(_FieldSpec(f.name, hints[f.name], rules, f.default is not dataclasses.MISSING
                                        or f.default_factory is not dataclasses.MISSING, f.default,
                                        f.default_factory))
            cls.__specs = specs
        return specs


def _validating_init(self: Model, **kwargs: Any) -> None:
    """Constructing a model checks its keywords, as a pydantic model's constructor does."""
    cls = type(self)
    errors: list[dict[str, Any]] = []
    values = _field_values(cls, kwargs, (), errors)
    if errors:
        raise ValidationError(cls.__name__, errors)
    self._raw_init(**values)  # type: ignore[attr-defined]
    _after(self, (), errors, kwargs)
    if errors:
        raise ValidationError(cls.__name__, errors)


def _dump(value: Any, as_json: bool) -> Any:
    if isinstance(value, Model):
        return value.model_dump(mode="json" if as_json else "python")
    if isinstance(value, tuple | list):
        items = [_dump(v, as_json) for v in value]
        return items if as_json or isinstance(value, list) else tuple(items)
    if isinstance(value, Mapping):
        return {(_dump(k, as_json)): _dump(v, as_json) for k, v in value.items()}
    if as_json:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, Decimal | Path):
            return str(value)
        if isinstance(value, _dt.date):
            return value.isoformat()
    return value


def _validators(cls: type[Model], kind: str) -> list[tuple[Callable[..., Any], Any]]:
    out = []
    for klass in reversed(cls.__mro__):
        for attr in vars(klass).values():
            fn = attr.__func__ if isinstance(attr, classmethod | staticmethod) else attr
            if kind == "field" and hasattr(fn, "__schema_fields__"):
                out.append((fn, fn.__schema_fields__))
            elif kind != "field" and getattr(fn, "__schema_mode__", None) == kind:
                out.append((fn, None))
    return out


def _add(errors: list[dict[str, Any]], loc: Loc, kind: str, msg: str, value: Any,
         ctx: dict[str, Any] | None = None) -> None:
    errors.append({"loc": loc, "msg": msg, "type": kind, "input": value, **({"ctx": ctx} if ctx else {})})


def _kind(exc: ValueError) -> tuple[str, str]:
    return (exc.kind if isinstance(exc, FieldError) else "value_error"), str(exc)


def _validate_model(cls: type[Model], data: Any, loc: Loc, errors: list[dict[str, Any]]) -> Any:
    if isinstance(data, cls):
        return data
    for fn, _ in _validators(cls, "before"):
        data = fn(cls, data)
    if not isinstance(data, Mapping):
        _add(errors, loc, "model_type", f"Input should be a valid dictionary or instance of {cls.__name__}", data)
        return None
    before = len(errors)
    values = _field_values(cls, data, loc, errors)
    if len(errors) > before:
        return None
    instance = object.__new__(cls)
    instance._raw_init(**values)  # type: ignore[attr-defined]
    return _after(instance, loc, errors, dict(data))


def _after(instance: Model, loc: Loc, errors: list[dict[str, Any]], data: Any) -> Any:
    for fn, _ in _validators(type(instance), "after"):
        try:
            instance = fn(instance)
        except ValueError as exc:
            _add(errors, loc, "value_error", str(exc), data)
            return None
    return instance


def _field_values(cls: type[Model], data: Mapping[str, Any], loc: Loc, errors: list[dict[str, Any]]) -> dict[str, Any]:
    specs = cls._specs()
    names = {s.name for s in specs}
    checks = _validators(cls, "field")
    values: dict[str, Any] = {}
    for spec in specs:
        where = (*loc, spec.name)
        if spec.name not in data:
            if not spec.has_default:
                _add(errors, where, "missing", "Field required", dict(data))
            else:
                values[spec.name] = spec.default if spec.factory is dataclasses.MISSING else spec.factory()
            continue
        before = len(errors)
        strict = cls.model_strict if spec.rules.strict is None else spec.rules.strict
        value = _check(spec.hint, data[spec.name], where, errors, strict, spec.rules)
        if len(errors) > before:
            continue
        try:
            for fn, fields in checks:
                if spec.name in fields:
                    takes_info = len(inspect.signature(fn).parameters) > 2
                    value = fn(cls, value, ValidationInfo(dict(values))) if takes_info else fn(cls, value)
        except ValueError as exc:
            _add(errors, where, *_kind(exc), data[spec.name], getattr(exc, "ctx", None))
            continue
        values[spec.name] = value
    for key in data:
        if key not in names:
            _add(errors, (*loc, key), "extra_forbidden", "Extra inputs are not permitted", data[key])
    return values


def _rules_of(metadata: tuple[Any, ...], base: Constraints, strict: bool) -> tuple[Constraints, bool]:
    rules = base
    for meta in metadata:
        if isinstance(meta, BeforeValidator):
            continue
        if isinstance(meta, dataclasses.Field):
            meta = meta.metadata.get("rules", Constraints())
        if isinstance(meta, Strict):
            strict = meta.strict
        elif isinstance(meta, Constraints):
            merged = {k: v for k, v in dataclasses.asdict(meta).items()
                      if v is not None and v is not False and v != dataclasses.MISSING}
            if meta.strict is not None:
                strict = meta.strict
            rules = dataclasses.replace(rules, **{k: v for k, v in merged.items() if k != "strict"})
    return rules, strict


_NO_RULES = Constraints()
"""A field or item with no bounds of its own (shared: the record is frozen)."""


def _check(hint: Any, value: Any, loc: Loc, errors: list[dict[str, Any]], strict: bool,
           rules: Constraints = _NO_RULES) -> Any:
    """``value`` converted to ``hint`` and within ``rules``; on a problem, one error appended and None."""
    if typing.get_origin(hint) is typing.Annotated:
        inner, *metadata = typing.get_args(hint)
        for meta in metadata:
            if isinstance(meta, BeforeValidator):
                try:
                    value = meta.func(value)
                except ValueError as exc:
                    _add(errors, loc, *_kind(exc), value, getattr(exc, "ctx", None))
                    return None
        rules, strict = _rules_of(tuple(metadata), rules, strict)
        return _check(inner, value, loc, errors, strict, rules)
    try:
        converted = _convert(hint, value, loc, errors, strict, rules)
    except Invalid as exc:
        _add(errors, loc, exc.kind, exc.msg, exc.value, exc.ctx)
        return None
    if converted is _FAILED:
        return None
    try:
        constrain(converted, rules)
    except Invalid as exc:
        _add(errors, loc, exc.kind, exc.msg, exc.value, exc.ctx)
        return None
    return converted


_FAILED = object()


def _check_lazy(lazy: type[Lazy], value: Any, loc: Loc, errors: list[dict[str, Any]]) -> Any:
    model = lazy.load()
    if isinstance(model, type) and issubclass(model, Model):
        return _validate_model(model, value, loc, errors)
    try:
        return model.model_validate(value)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        for err in exc.errors():  # type: ignore[attr-defined]
            err = dict(err)
            err["loc"] = (*loc, *err["loc"])
            errors.append(err)
        return None


def _tagged(options: list[Any], key: str, value: Any, loc: Loc, errors: list[dict[str, Any]], strict: bool) -> Any:
    """One of several models, picked by ``value[key]`` (each model's ``key`` field has a Literal type)."""
    tags = {typing.get_args(typing.get_type_hints(o)[key])[0]: o for o in options}
    if isinstance(value, Model) and type(value) in options:
        return value
    if not isinstance(value, Mapping) or key not in value:
        raise Invalid("union_tag_not_found", f"Unable to extract tag using discriminator '{key}'", value,
                      {"discriminator": f"'{key}'"})
    model = tags.get(value[key])
    if model is None:
        expected = ", ".join(repr(t) for t in tags)
        raise Invalid("union_tag_invalid", f"Input tag {value[key]!r} found using '{key}' does not match any of the "
                      f"expected tags: {expected}", value)
    before = len(errors)
    out = _validate_model(model, value, loc, errors)
    return _FAILED if len(errors) > before else out


def _convert(hint: Any, value: Any, loc: Loc, errors: list[dict[str, Any]], strict: bool,
             rules: Constraints) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        if len(options) == 1:
            return _convert_one(options[0], value, loc, errors, strict, rules)
        if rules.discriminator is not None:
            return _tagged(options, rules.discriminator, value, loc, errors, strict)
        for exact in options:  # an input that already is one of the types is taken as it is (pydantic's smart mode)
            if isinstance(exact, type) and type(value) is exact:
                return value
        trial: list[dict[str, Any]] = []
        for option in options:
            trial.clear()
            result = _convert_one(option, value, loc, trial, strict, rules)
            if not trial and result is not _FAILED:
                return result
        raise Invalid(trial[0]["type"] if trial else "union_error",
                      trial[0]["msg"] if trial else "Input matches none of the allowed types", value)
    return _convert_one(hint, value, loc, errors, strict, rules)


def _convert_one(hint: Any, value: Any, loc: Loc, errors: list[dict[str, Any]], strict: bool,
                 rules: Constraints) -> Any:
    origin = typing.get_origin(hint)
    if typing.get_origin(hint) is typing.Annotated:
        before = len(errors)
        out = _check(hint, value, loc, errors, strict, rules)
        return _FAILED if len(errors) > before else out
    if origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, tuple) or (isinstance(value, list) and not strict):
            item = args[0]
            out, failed = [], False
            for i, v in enumerate(value):
                before = len(errors)
                converted = _check(item, v, (*loc, i), errors, strict)
                failed |= len(errors) > before
                out.append(converted)
            return _FAILED if failed else tuple(out)
        raise Invalid("tuple_type", "Input should be a valid tuple", value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        args = typing.get_args(hint) or (str, Any)
        if not isinstance(value, Mapping):
            raise Invalid("dict_type", "Input should be a valid dictionary", value)
        result, failed = {}, False
        for key, v in value.items():
            before = len(errors)
            k = _check(args[0], key, (*loc, key), errors, strict)
            converted = _check(args[1], v, (*loc, key), errors, strict)
            failed |= len(errors) > before
            result[k] = converted
        return _FAILED if failed else result
    if isinstance(hint, type) and issubclass(hint, Model | Lazy):
        before = len(errors)
        out = _validate_model(hint, value, loc, errors) if issubclass(hint, Model) else \
            _check_lazy(hint, value, loc, errors)
        return _FAILED if len(errors) > before else out
    return convert_leaf(hint, value, strict, rules)
