"""gateway.schema, the validator that replaced pydantic in the daemon's start path: what installers and
profile authors relied on from pydantic still holds (every problem at once, paths, strictness, its error
types and messages), and a lazily named model is imported only when the input has a value for it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import pytest

from gateway.schema import BeforeValidator, Field, Model, Strict, ValidationError, field_validator, model_validator


class Inner(Model):
    level: Literal["low", "high"] = "low"
    count: int = Field(default=1, ge=1, le=10)


def _no_float(value: object) -> object:
    if isinstance(value, float):
        raise ValueError("write it as a decimal string")
    return value


class Outer(Model):
    name: str = Field(min_length=1, pattern=r"^[a-z]+$")
    period: Annotated[float, Strict()] = 60.0
    amount: Annotated[Decimal, BeforeValidator(_no_float)] = Decimal(0)
    inners: tuple[Inner, ...] = ()
    path: Path | None = None

    @field_validator("period")
    @classmethod
    def _divides(cls, value: float) -> float:
        if 900 % value:
            raise ValueError("must divide 900")
        return value

    @model_validator(mode="after")
    def _not_both(self) -> Outer:
        if self.path is not None and self.inners:
            raise ValueError("give a path or inners, not both")
        return self


def _errors(data: object) -> list[tuple[tuple[object, ...], str, str]]:
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(data)
    return [(e["loc"], e["type"], e["msg"]) for e in info.value.errors()]


def test_every_problem_is_reported_with_its_path_and_pydantics_type_and_message() -> None:
    found = _errors({"name": "A", "period": "60", "amount": 0.1, "colour": 1,
                     "inners": [{"level": "mid"}, {"count": 0}, {"count": "x"}]})
    assert found == [
        (("name",), "string_pattern_mismatch", "String should match pattern '^[a-z]+$'"),
        (("period",), "float_type", "Input should be a valid number"),
        (("amount",), "value_error", "write it as a decimal string"),
        (("inners", 0, "level"), "literal_error", "Input should be 'low' or 'high'"),
        (("inners", 1, "count"), "greater_than_equal", "Input should be greater than or equal to 1"),
        (("inners", 2, "count"), "int_parsing",
         "Input should be a valid integer, unable to parse string as an integer"),
        (("colour",), "extra_forbidden", "Extra inputs are not permitted"),
    ]
    assert _errors({}) == [(("name",), "missing", "Field required")]


def test_values_are_converted_as_pydantic_does_and_validators_run_once_types_are_right() -> None:
    out = Outer.model_validate({"name": "ab", "period": 30, "amount": "1.50", "inners": [{"count": "3"}],
                                "path": None})
    assert out == Outer(name="ab", period=30.0, amount=Decimal("1.50"), inners=(Inner(count=3),))
    assert isinstance(out.period, float)
    assert out.inners[0].count == 3
    assert Outer.model_validate({"name": "ab", "path": "x/y"}).path == Path("x/y")
    assert _errors({"name": "ab", "period": 7}) == [(("period",), "value_error", "must divide 900")]
    assert _errors({"name": "ab", "path": "p", "inners": [{}]}) == [
        ((), "value_error", "give a path or inners, not both")]


def test_records_are_frozen_and_constructing_one_checks_it_copies_do_not() -> None:
    inner = Inner(count=2)
    with pytest.raises(FrozenInstanceError):
        inner.count = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="less than or equal to 10"):
        Inner(count=11)
    assert inner.model_copy(update={"count": 99}).count == 99
    assert Outer(name="ab", inners=(inner,)).model_dump(mode="json") == {
        "name": "ab", "period": 60.0, "amount": "0", "inners": [{"level": "low", "count": 2}], "path": None}


def test_a_lazy_model_is_imported_only_for_a_section_the_file_has(tmp_path: Path) -> None:
    probe = ("import sys; from gateway.config import parse_config\n"
             "parse_config('gateway_id = \"gw\"\\n[tariffs.t]\\ncurrency = \"EUR\"\\n"
             "energy = { kind = \"tiered\", tiers = [{ rate = \"0.3\" }] }\\n')\n"
             "print('gateway.billing.tariff' in sys.modules, 'gateway.config.stellar' in sys.modules, "
             "'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60,
                         cwd=tmp_path)
    assert out.stdout.split() == ["True", "False", "False"]
