"""Built-in profiles pinned to the DOCUMENTED register maps, not to themselves.

The other profile tests serve registers built from the profile under test, so a
wrong address, type, word order or scale in a TOML file would still pass them.
Here every fact comes from the table below, written from the vendors' published
Modbus maps (via the design notes, FIELD_NOTES.md, first; the manufacturer's
document or a public driver citing it where the notes are silent). Nothing in
this file is read from firmware_profiles/*.toml: if a profile and this table
disagree, one of them is wrong and a person has to look at the manual.

Scale is the multiplier from the raw register value to SI (Wh, W):
kWh float → 1000, 0.01 kWh integer → 10, 0.1 kWh → 100, Wh → 1, 0.01 W → 0.01.
Addresses are 0-based wire addresses (manual's 1-based number minus one).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import pytest

from gateway.profiles import Profile, Quantity, builtin_profile, builtin_profiles, decode


class Reg(NamedTuple):
    """One documented register: where it is and how to read it."""

    function: int  # 3 = holding registers, 4 = input registers
    address: int  # 0-based wire address
    datatype: str  # int16/uint16/int32/uint32/int64/uint64/float32/float64
    word_order: str  # "big" = most significant word first, "little" = least significant first
    scale: float  # raw × scale = SI value (Wh for energy, W for power)


PINNED = ("energy_import", "energy_export", "power_total")

# fmt: off
DOCUMENTED: dict[str, dict[str, Reg]] = {
    # Eastron "SDM120 Modbus protocol" (input registers 30073/30075/30013, float32 kWh / W);
    # FIELD_NOTES "Eastron SDM120 / SDM230 / SDM630"; same addresses in volkszaehler/mbmd sdm120.go.
    "eastron-sdm120": {
        "energy_import": Reg(4, 0x0048, "float32", "big", 1000),
        "energy_export": Reg(4, 0x004A, "float32", "big", 1000),
        "power_total":   Reg(4, 0x000C, "float32", "big", 1),
    },
    # Eastron "SDM230 Modbus protocol" (30073/30075/30013); FIELD_NOTES; mbmd sdm230.go.
    "eastron-sdm230": {
        "energy_import": Reg(4, 0x0048, "float32", "big", 1000),
        "energy_export": Reg(4, 0x004A, "float32", "big", 1000),
        "power_total":   Reg(4, 0x000C, "float32", "big", 1),
    },
    # Eastron "SDM630 Modbus protocol" (30073/30075, total system power 30053); FIELD_NOTES; mbmd sdm.go.
    "eastron-sdm630": {
        "energy_import": Reg(4, 0x0048, "float32", "big", 1000),
        "energy_export": Reg(4, 0x004A, "float32", "big", 1000),
        "power_total":   Reg(4, 0x0034, "float32", "big", 1),
    },
    # ABB B-series (EQ meters) user manual, Modbus map: energy uint64 0.01 kWh, total active power int32
    # 0.01 W, high word first; FIELD_NOTES "ABB B21/B23/B24"; mbmd abb.go (same addresses and divisors).
    "abb-b21": {
        "energy_import": Reg(3, 0x5000, "uint64", "big", 10),
        "energy_export": Reg(3, 0x5004, "uint64", "big", 10),
        "power_total":   Reg(3, 0x5B14, "int32", "big", 0.01),
    },
    # ABB B-series user manual (as abb-b21); FIELD_NOTES; mbmd abb.go.
    "abb-b23": {
        "energy_import": Reg(3, 0x5000, "uint64", "big", 10),
        "energy_export": Reg(3, 0x5004, "uint64", "big", 10),
        "power_total":   Reg(3, 0x5B14, "int32", "big", 0.01),
    },
    # ABB B-series user manual (as abb-b21); FIELD_NOTES; mbmd abb.go.
    "abb-b24": {
        "energy_import": Reg(3, 0x5000, "uint64", "big", 10),
        "energy_export": Reg(3, 0x5004, "uint64", "big", 10),
        "power_total":   Reg(3, 0x5B14, "int32", "big", 0.01),
    },
    # Carlo Gavazzi "EM24-DIN communication protocol" (INT32, LSW first): kWh(+) TOT 0x3E and kWh(-) TOT
    # 0x5C in 0.1 kWh, W sys 0x28 in 0.1 W; FIELD_NOTES "Carlo Gavazzi EM24" (0x42 is a partial counter).
    "carlo-gavazzi-em24": {
        "energy_import": Reg(4, 0x003E, "int32", "little", 100),
        "energy_export": Reg(4, 0x005C, "int32", "little", 100),
        "power_total":   Reg(4, 0x0028, "int32", "little", 0.1),
    },
    # Carlo Gavazzi "EM330/EM340/ET330/ET340 communication protocol" (INT32, LSW first, 0.1 kWh, 0.1 W);
    # FIELD_NOTES "EM330/EM340/ET340"; scales confirmed by mbmd carlogavazzi-ex3x0.go (/10 for W and kWh).
    "carlo-gavazzi-em340": {
        "energy_import": Reg(4, 0x0034, "int32", "little", 100),
        "energy_export": Reg(4, 0x004E, "int32", "little", 100),
        "power_total":   Reg(4, 0x0028, "int32", "little", 0.1),
    },
    # Schneider Electric iEM3100/iEM3200 user guide DOCA0005EN: Total active power register 3060 (float32,
    # kW), Total active energy import/export 3204/3208 (INT64, Wh), 1-based → minus 1; FIELD_NOTES.
    "schneider-iem3155": {
        "energy_import": Reg(3, 0x0C83, "int64", "big", 1),
        "energy_export": Reg(3, 0x0C87, "int64", "big", 1),
        "power_total":   Reg(3, 0x0BF3, "float32", "big", 1000),
    },
    # Finder "Modbus 7M24-7M38 v2" protocol guide: input registers, IEEE-754 float32 high word first,
    # total active power 2536 (W), energy counters 2752 import / 2756 export (Wh); FIELD_NOTES "Finder".
    "finder-7m38": {
        "energy_import": Reg(4, 2752, "float32", "big", 1),
        "energy_export": Reg(4, 2756, "float32", "big", 1),
        "power_total":   Reg(4, 2536, "float32", "big", 1),
    },
    # ORNO "Register description OR-WE-514 & OR-WE-515": total active energy 0xA000 uint32 0.01 kWh,
    # active power 0x0140 uint32 0.001 kW (= W); FIELD_NOTES "ORNO WE-514/515"; mbmd orno1p.go.
    # The meter documents only a TOTAL energy counter (no separate import/export); it is pinned here as
    # the profile's energy_import.
    "orno-we514": {
        "energy_import": Reg(3, 0xA000, "uint32", "big", 10),
        "power_total":   Reg(3, 0x0140, "uint32", "big", 1),
    },
    # ORNO OR-WE-516/517 register description: float32 high word first, energy in kWh, power in kW;
    # FIELD_NOTES "ORNO WE-516/517" (import 0x108, export 0x110, power 0x1C kW); mbmd orno3p.go.
    "orno-we516": {
        "energy_import": Reg(3, 0x0108, "float32", "big", 1000),
        "energy_export": Reg(3, 0x0110, "float32", "big", 1000),
        "power_total":   Reg(3, 0x001C, "float32", "big", 1000),
    },
    # DZG "Communication Protocol DVH4013": holding registers, uint32, energy 0x4000 import / 0x4100
    # export in 0.001 kWh (= Wh); FIELD_NOTES "DZG DVH4013"; mbmd dzg.go. No power in FIELD_NOTES.
    "dzg-dvh4013": {
        "energy_import": Reg(3, 0x4000, "uint32", "big", 1),
        "energy_export": Reg(3, 0x4100, "uint32", "big", 1),
    },
    # Janitza "MID Energy Meters B-Series product manual": holding registers, float32, Wh / W, addresses
    # 19068 import, 19076 export, 19026 total active power; FIELD_NOTES "Janitza B-series"; mbmd janitza.go.
    "janitza-b23": {
        "energy_import": Reg(3, 0x4A7C, "float32", "big", 1),
        "energy_export": Reg(3, 0x4A84, "float32", "big", 1),
        "power_total":   Reg(3, 0x4A52, "float32", "big", 1),
    },
}
# fmt: on

CASES = [(pid, name) for pid, regs in DOCUMENTED.items() for name in regs]

# SI values served in the decode test: different per quantity so a profile reading its neighbour fails.
SERVED_SI = {
    "energy_import": 123_456.7 * 1000,  # 123 456.7 kWh in Wh
    "energy_export": 65_432.1 * 1000,  # 65 432.1 kWh in Wh
    "power_total": 2345.0,  # W
}
EXPORTING_W = -1234.5  # a signed power register must keep the export direction

# Our own encoder, written from the manuals' type names; deliberately not gateway.profiles.encode.
_STRUCT = {
    "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
    "int64": "q", "uint64": "Q", "float32": "f", "float64": "d",
}  # fmt: skip


def encode_documented(reg: Reg, si: float) -> list[int]:
    """Registers a meter following the documented map sends for the SI value `si`."""
    code = _STRUCT[reg.datatype]
    raw = si / reg.scale
    data = struct.pack(">" + code, raw if reg.datatype.startswith("float") else round(raw))
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return words[::-1] if reg.word_order == "little" else words


def documented_image(profile_id: str, values: dict[str, float]) -> dict[int, dict[int, int]]:
    """Register image (function code → address → word) of a device answering per the documented map."""
    image: dict[int, dict[int, int]] = {3: {}, 4: {}}
    for name, si in values.items():
        reg = DOCUMENTED[profile_id][name]
        image[reg.function].update(enumerate(encode_documented(reg, si), start=reg.address))
    return image


def read_as_profile(q: Quantity, image: dict[int, dict[int, int]]) -> float:
    """Read `q` the way the profile says (its function, address, width) and decode it with the gateway."""
    # Registers the device does not serve read as 0, like the gaps on most meters.
    registers = [image[q.function].get(a, 0) for a in range(q.address, q.end)]
    return decode(q, registers)


def documented_mismatches(profile: Profile, profile_id: str) -> list[str]:
    """Every way `profile` differs from DOCUMENTED[profile_id]; empty when it matches."""
    problems: list[str] = []
    for name, reg in DOCUMENTED[profile_id].items():
        q = profile.quantities.get(name)
        if q is None:
            problems.append(f"{name}: documented at FC{reg.function:02d} {reg.address:#06x} but missing")
            continue
        actual = Reg(q.function, q.address, q.datatype.value, q.word_order, q.scale)
        for field in Reg._fields:
            want, got = getattr(reg, field), getattr(actual, field)
            if want != got:
                shown = (f"{want:#06x}", f"{got:#06x}") if field == "address" else (repr(want), repr(got))
                problems.append(f"{name}.{field}: documented {shown[0]}, profile has {shown[1]}")
    undocumented = sorted(set(PINNED) & set(profile.quantities) - set(DOCUMENTED[profile_id]))
    problems.extend(f"{name}: in the profile but not in the documented table" for name in undocumented)
    return problems


def test_table_covers_every_builtin_profile() -> None:
    assert sorted(DOCUMENTED) == [p.id for p in builtin_profiles()]


@pytest.mark.parametrize("profile_id", sorted(DOCUMENTED))
def test_pinned_quantities_are_exactly_the_documented_ones(profile_id: str) -> None:
    profile = builtin_profile(profile_id)
    present = {name for name in PINNED if name in profile.quantities}
    assert present == set(DOCUMENTED[profile_id]), f"{profile_id}: pinned quantities differ from the table"


@pytest.mark.parametrize(("profile_id", "name"), CASES, ids=[f"{p}-{n}" for p, n in CASES])
def test_quantity_matches_documented_register(profile_id: str, name: str) -> None:
    reg = DOCUMENTED[profile_id][name]
    q = builtin_profile(profile_id).quantities.get(name)
    assert q is not None, f"{profile_id} has no {name}; documented at FC{reg.function:02d} {reg.address:#06x}"
    assert q.function == reg.function, f"{profile_id}.{name}: function code"
    assert q.address == reg.address, f"{profile_id}.{name}: address {q.address:#06x}, documented {reg.address:#06x}"
    assert q.datatype.value == reg.datatype, f"{profile_id}.{name}: data type"
    assert q.word_order == reg.word_order, f"{profile_id}.{name}: word order"
    assert q.scale == reg.scale, f"{profile_id}.{name}: scale to SI"


@pytest.mark.parametrize("profile_id", sorted(DOCUMENTED))
def test_profile_has_no_documented_mismatch(profile_id: str) -> None:
    # The same comparison as above, as one list per profile (also used for the mutation check).
    assert documented_mismatches(builtin_profile(profile_id), profile_id) == []


@pytest.mark.parametrize("profile_id", sorted(DOCUMENTED))
def test_documented_device_image_decodes_to_si(profile_id: str) -> None:
    """Serve every pinned quantity at its documented place; the profile must read back the SI values."""
    profile = builtin_profile(profile_id)
    values = {name: SERVED_SI[name] for name in DOCUMENTED[profile_id]}
    image = documented_image(profile_id, values)
    for name, si in values.items():
        got = read_as_profile(profile.quantities[name], image)
        # float32 keeps ~7 significant digits; a wrong scale, word order or address is off by far more.
        assert got == pytest.approx(si, rel=1e-6), f"{profile_id}.{name}: decoded {got!r}, served {si!r}"


SIGNED_POWER = [
    pid
    for pid, regs in DOCUMENTED.items()
    if "power_total" in regs and not regs["power_total"].datatype.startswith("uint")
]


@pytest.mark.parametrize("profile_id", SIGNED_POWER)
def test_exporting_power_decodes_negative(profile_id: str) -> None:
    profile = builtin_profile(profile_id)
    image = documented_image(profile_id, {"power_total": EXPORTING_W})
    got = read_as_profile(profile.quantities["power_total"], image)
    assert got == pytest.approx(EXPORTING_W, rel=1e-6), f"{profile_id}.power_total: decoded {got!r}"


def test_encoder_matches_hand_worked_examples() -> None:
    # Guards the test's own encoder against the examples worked by hand from the manuals.
    # SDM: 1.0 kWh as float32 0x3F800000, high word first.
    assert encode_documented(Reg(4, 0x48, "float32", "big", 1000), 1000.0) == [0x3F80, 0x0000]
    # Carlo Gavazzi: 0x00010002 travels least significant word first.
    assert encode_documented(Reg(4, 0x3E, "int32", "little", 1), float(0x0001_0002)) == [0x0002, 0x0001]
    # ABB: 1234.56 kWh = 123456 × 0.01 kWh = 0x1E240 in a uint64, high word first.
    assert encode_documented(Reg(3, 0x5000, "uint64", "big", 10), 1_234_560.0) == [0, 0, 0x0001, 0xE240]
    # Negative int32, LSW first: -2 → 0xFFFFFFFE.
    assert encode_documented(Reg(4, 0x28, "int32", "little", 1), -2.0) == [0xFFFE, 0xFFFF]
