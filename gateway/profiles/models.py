"""Validated, immutable description of one meter model's register map.

Profiles are data written by people reading PDF manuals, so validation is
strict (no silent "3" → 3 coercion) and the checks target the mistakes such
people make: a kWh register with a forgotten scale shows up as the wrong unit,
an off-by-one address shows up as overlapping values, a value wider than the
device's read limit could never be fetched.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from gateway.profiles.datatypes import DataType
from gateway.schema import Field, Model, ValidationInfo, field_validator, model_validator

#: Units a standard quantity must carry after scaling; enforcing them turns a
#: forgotten kWh→Wh scale into a load error instead of a 1000× billing error.
STANDARD_UNITS: Mapping[str, str] = {
    "energy_import": "Wh",
    "energy_export": "Wh",
    "power_total": "W",
    "power_l1": "W",
    "power_l2": "W",
    "power_l3": "W",
    "voltage_l1": "V",
    "voltage_l2": "V",
    "voltage_l3": "V",
    "current_l1": "A",
    "current_l2": "A",
    "current_l3": "A",
    "frequency": "Hz",
    "power_factor": "",
}

#: Units accepted for non-standard quantities: still SI, never "kWh".
ALLOWED_UNITS = frozenset({"Wh", "W", "V", "A", "Hz", "var", "varh", "VA", "VAh", ""})

MAX_PDU_REGISTERS = 125
MAX_POWER_ROUNDING = 1.05
"""A written-out max_power_w may round the rating up by this factor, never down (it would hold honest reads)."""
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
PROFILE_ID_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

Address = Annotated[int, Field(ge=0, le=0xFFFF)]
FunctionCode = Literal[3, 4]
WordOrder = Literal["big", "little"]
Framing = Literal["8N1", "8E1", "8N2"]
StandardBaud = Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200]


class _Frozen(Model):
    # strict: profile files are typed TOML, so a quoted number is a mistake to report. (A gateway.schema
    # record, not a pydantic model: every daemon start reads its profiles, see gateway.schema.)
    model_strict = True


class Quantity(_Frozen):
    """One measured value: where it lives on the wire and how to turn it into SI."""

    name: str
    address: Address
    function: FunctionCode
    datatype: Annotated[DataType, Field(strict=False)]
    word_order: WordOrder = "big"
    scale: float
    unit: str
    invalid: Annotated[tuple[int, ...], Field(strict=False)] = ()

    @property
    def register_count(self) -> int:
        return self.datatype.register_count

    @property
    def end(self) -> int:
        """One past the last register, so spans compose as half-open ranges."""
        return self.address + self.register_count

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"quantity name {v!r} must be lowercase snake_case")
        return v

    @field_validator("scale")
    @classmethod
    def _check_scale(cls, v: float) -> float:
        if v == 0 or not math.isfinite(v):
            raise ValueError("scale must be a finite, non-zero multiplier (raw × scale = SI value)")
        return v

    @field_validator("invalid")
    @classmethod
    def _normalise_sentinels(cls, v: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        # Sentinels are compared against the unsigned bit pattern, so a signed
        # sentinel written as -1 and one written as 0xFFFF mean the same thing.
        datatype = info.data.get("datatype")
        if not isinstance(datatype, DataType):
            return v
        width = 1 << datatype.bits
        out: list[int] = []
        for s in v:
            if not -(width >> 1) <= s < width:
                raise ValueError(f"sentinel {s:#x} does not fit in {datatype.value}")
            out.append(s % width)
        return tuple(sorted(set(out)))

    @model_validator(mode="after")
    def _check_unit_and_span(self) -> Quantity:
        expected = STANDARD_UNITS.get(self.name)
        if expected is not None and self.unit != expected:
            raise ValueError(
                f"{self.name} must be scaled to {expected!r}, not {self.unit!r}"
                " (set scale so raw × scale is in SI units, e.g. kWh → scale 1000 → Wh)"
            )
        if self.unit not in ALLOWED_UNITS:
            raise ValueError(f"unit {self.unit!r} is not one of {sorted(ALLOWED_UNITS)}")
        if self.end > 0x10000:
            raise ValueError(f"{self.datatype.value} at {self.address:#06x} runs past register 0xFFFF")
        return self


class SerialDefaults(_Frozen):
    """Factory serial settings, used when commissioning a bus of unknown meters."""

    baud: StandardBaud = 9600
    framing: Framing = "8N1"
    unit_id: int = Field(default=1, ge=1, le=247)

    @property
    def bits_per_char(self) -> int:
        # start bit + 8 data bits + parity-or-second-stop-bit + stop bit
        return 10 if self.framing == "8N1" else 11

    @property
    def parity(self) -> Literal["N", "E"]:
        return "E" if self.framing == "8E1" else "N"

    @property
    def stopbits(self) -> int:
        return 2 if self.framing == "8N2" else 1


class IdentityRegister(_Frozen):
    """A register whose content tells this model apart from others during a bus scan.

    `expect=None` means the register only has to be readable (e.g. a serial
    number that differs per unit but exists only on this family).
    Strings match by prefix after stripping padding, because devices pad
    differently ("B23 " vs "B23\\0") and variants append suffixes.
    """

    name: str
    address: Address
    function: FunctionCode
    datatype: Literal["string", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
    count: int | None = Field(default=None, ge=1, le=MAX_PDU_REGISTERS)
    word_order: WordOrder = "big"
    expect: str | int | None = None

    @property
    def register_count(self) -> int:
        if self.datatype == "string":
            assert self.count is not None  # guaranteed by the validator below
            return self.count
        return DataType(self.datatype).register_count

    @model_validator(mode="after")
    def _check_count(self) -> IdentityRegister:
        if self.datatype == "string":
            if self.count is None:
                raise ValueError("a string identity register needs count (number of registers)")
            if isinstance(self.expect, int):
                raise ValueError("a string identity register must expect a string")
        else:
            width = DataType(self.datatype).register_count
            if self.count is not None and self.count != width:
                raise ValueError(f"count {self.count} contradicts {self.datatype} ({width} registers)")
            if isinstance(self.expect, str):
                raise ValueError(f"a {self.datatype} identity register must expect an integer")
        return self


class Profile(_Frozen):
    """Everything the gateway knows about one meter model/firmware family."""

    id: str
    manufacturer: str = Field(min_length=1)
    model: str = Field(min_length=1)
    variants: Annotated[tuple[str, ...], Field(strict=False)] = ()
    max_registers_per_read: int = Field(ge=1, le=MAX_PDU_REGISTERS)
    registers_even_only: bool = False
    serial: SerialDefaults = SerialDefaults()
    identity: Annotated[tuple[IdentityRegister, ...], Field(strict=False)] = ()
    max_power_w: float | None = Field(default=None, gt=0)
    """The most the meter can measure, W: a register rising faster is a misread until confirmed.
    Written out when rounded up from the rating below (which it must then agree with)."""
    phases: Literal[1, 2, 3] | None = None
    max_current_a: float | None = Field(default=None, gt=0)
    """Maximum current per phase (Imax on the nameplate: the 100 in "5(100) A")."""
    max_voltage_v: float | None = Field(default=None, gt=0)
    """Highest line-to-neutral voltage it measures (e.g. 230 V + 20 % = 276 V)."""
    ct_connected: bool = False
    """Measures through current transformers: what it can measure depends on the CT fitted, so the
    profile can give no ceiling; the installer configures ``max_power_w`` per meter."""
    quantities: Mapping[str, Quantity] = Field(min_length=1)

    @property
    def rated_power_w(self) -> float | None:
        """phases × maximum current × maximum voltage, when the profile gives the rating."""
        if self.phases is None or self.max_current_a is None or self.max_voltage_v is None:
            return None
        return self.phases * self.max_current_a * self.max_voltage_v

    @property
    def ceiling_w(self) -> float | None:
        """The profile's ceiling on measurable power: ``max_power_w``, else the rating; ``None`` if neither."""
        return self.max_power_w if self.max_power_w is not None else self.rated_power_w

    @model_validator(mode="before")
    @classmethod
    def _name_quantities(cls, data: Any) -> Any:
        # In TOML the name is the table key; copying it in lets each Quantity
        # stand alone once it leaves the profile (read plans, log lines).
        if isinstance(data, dict) and isinstance(data.get("quantities"), dict):
            named: dict[str, Any] = {}
            for key, q in data["quantities"].items():
                named[key] = {"name": key, **q} if isinstance(q, dict) else q
            data = {**data, "quantities": named}
        return data

    @field_validator("id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        if not PROFILE_ID_RE.match(v):
            raise ValueError(f"id {v!r} must be manufacturer-model in lowercase kebab case")
        return v

    @field_validator("quantities")
    @classmethod
    def _check_quantities(cls, v: Mapping[str, Quantity], info: ValidationInfo) -> Mapping[str, Quantity]:
        for key, q in v.items():
            if q.name != key:
                raise ValueError(f"{key}: name {q.name!r} differs from its table key")
        limit = info.data.get("max_registers_per_read")
        if isinstance(limit, int):
            for q in v.values():
                if q.register_count > limit:
                    raise ValueError(
                        f"{q.name}: {q.register_count} registers exceed max_registers_per_read={limit}"
                    )
        # Overlap is almost always an off-by-one from 1-based manual numbering.
        by_fc = sorted(v.values(), key=lambda q: (q.function, q.address))
        for a, b in itertools.pairwise(by_fc):
            if a.function == b.function and b.address < a.end:
                raise ValueError(
                    f"{a.name} ({a.address:#06x}..{a.end - 1:#06x}) overlaps {b.name} at {b.address:#06x}"
                    " (check for 1-based register numbers)"
                )
        return v

    @model_validator(mode="after")
    def _check_rating(self) -> Profile:
        rating = (self.phases, self.max_current_a, self.max_voltage_v)
        if any(x is not None for x in rating) and any(x is None for x in rating):
            raise ValueError("a rating needs all of phases, max_current_a and max_voltage_v (ceiling = their product)")
        if self.ct_connected and (self.max_power_w is not None or self.phases is not None):
            raise ValueError("a CT-connected profile cannot give max_power_w or a rating: what the meter measures "
                             "depends on the CT fitted (the installer sets max_power_w per meter)")
        rated = self.rated_power_w
        if rated is not None and self.max_power_w is not None and \
                not rated <= self.max_power_w <= rated * MAX_POWER_ROUNDING:
            raise ValueError(f"max_power_w {self.max_power_w:.0f} W contradicts the rating "
                             f"({self.phases} x {self.max_current_a:g} A x {self.max_voltage_v:g} V = {rated:.0f} W): "
                             "it may round the rating up by at most 5 %, never below it")
        return self

    @model_validator(mode="after")
    def _check_even(self) -> Profile:
        if self.registers_even_only and self.max_registers_per_read % 2:
            raise ValueError(
                "registers_even_only requires an even max_registers_per_read"
                f" (got {self.max_registers_per_read})"
            )
        return self
