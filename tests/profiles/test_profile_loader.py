"""Profile files: built-ins are sound, and a broken user file says where and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ProfileError
from gateway.profiles import (
    STANDARD_UNITS,
    Profile,
    builtin_profile,
    builtin_profiles,
    load_profile_file,
    resolve_profile,
)

GOOD = """\
id = "acme-m1"
manufacturer = "Acme"
model = "M1"
max_registers_per_read = 60

[quantities.energy_import]
address = 0x48
function = 4
datatype = "float32"
scale = 1000
unit = "Wh"

[quantities.power_total]
address = 0x34
function = 4
datatype = "float32"
scale = 1
unit = "W"
"""


def write(tmp_path: Path, text: str, name: str = "acme-m1.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_builtin_profiles_sorted_and_named_after_their_files() -> None:
    profiles = builtin_profiles()
    ids = [p.id for p in profiles]
    assert ids == sorted(ids)
    assert "eastron-sdm630" in ids
    for p in profiles:
        assert builtin_profile(p.id) is p


@pytest.mark.parametrize("profile", builtin_profiles(), ids=lambda p: p.id)
def test_builtin_profile_is_sane(profile: Profile) -> None:
    assert profile.quantities, "a profile without quantities reads nothing"
    assert "energy_import" in profile.quantities, "billing needs an import register"
    for name, quantity in profile.quantities.items():
        assert quantity.name == name
        if name in STANDARD_UNITS:
            assert quantity.unit == STANDARD_UNITS[name]
    if profile.registers_even_only:
        assert profile.max_registers_per_read % 2 == 0


def test_sdm630_map() -> None:
    p = builtin_profile("eastron-sdm630")
    assert (p.max_registers_per_read, p.registers_even_only) == (80, True)
    assert (p.serial.baud, p.serial.framing, p.serial.unit_id) == (9600, "8N1", 1)
    addresses: dict[str, tuple[int, int, str, float]] = {
        n: (int(q.function), q.address, q.datatype.value, q.scale) for n, q in p.quantities.items()
    }
    expected: dict[str, tuple[int, int, str, float]] = {
        "energy_import": (4, 0x48, "float32", 1000),
        "energy_export": (4, 0x4A, "float32", 1000),
        "power_total": (4, 0x34, "float32", 1),
        "frequency": (4, 0x46, "float32", 1),
    }
    assert {n: addresses[n] for n in expected} == expected
    assert [p.quantities[f"voltage_l{i}"].address for i in (1, 2, 3)] == [0x00, 0x02, 0x04]
    assert [p.quantities[f"current_l{i}"].address for i in (1, 2, 3)] == [0x06, 0x08, 0x0A]
    assert [p.quantities[f"power_l{i}"].address for i in (1, 2, 3)] == [0x0C, 0x0E, 0x10]
    assert p.identity[0].address == 0xFC00


def test_unknown_builtin_lists_known_ids() -> None:
    with pytest.raises(ProfileError, match=r"unknown firmware profile 'acme-x1'.*eastron-sdm630"):
        builtin_profile("acme-x1")


def test_builtin_lookup_never_follows_paths() -> None:
    with pytest.raises(ProfileError, match="unknown firmware profile"):
        builtin_profile("../gateway/errors")


def test_good_user_file_loads(tmp_path: Path) -> None:
    p = load_profile_file(write(tmp_path, GOOD))
    assert p.id == "acme-m1"
    assert p.quantities["energy_import"].name == "energy_import"
    assert p.serial.unit_id == 1


@pytest.mark.parametrize(
    ("old", "new", "path", "reason"),
    [
        (
            'datatype = "float32"\nscale = 1000',
            'datatype = "float33"\nscale = 1000',
            "quantities.energy_import.datatype",
            "float32",
        ),
        (
            'scale = 1000\nunit = "Wh"',
            'scale = 1\nunit = "kWh"',
            "quantities.energy_import",
            "must be scaled to 'Wh'",
        ),
        ("address = 0x48", 'address = "0x48"', "quantities.energy_import.address", "valid integer"),
        ("address = 0x48", "address = 0x10000", "quantities.energy_import.address", "less than or equal"),
        (
            'function = 4\ndatatype = "float32"\nscale = 1000',
            'function = 6\ndatatype = "float32"\nscale = 1000',
            "quantities.energy_import.function",
            "3 or 4",
        ),
        ("max_registers_per_read = 60", "max_registers_per_read = 200", "max_registers_per_read", "125"),
        ("max_registers_per_read = 60\n", "", "max_registers_per_read", "Field required"),
        (
            "address = 0x34",
            "address = 0x49",
            "quantities",
            "energy_import (0x0048..0x0049) overlaps power_total",
        ),
        ('unit = "W"', 'unit = "W"\ncolour = "red"', "quantities.power_total.colour", "Extra inputs"),
        ('id = "acme-m1"', 'id = "Acme M1"', "id", "kebab"),
    ],
)
def test_bad_user_file_names_field_and_reason(
    tmp_path: Path, old: str, new: str, path: str, reason: str
) -> None:
    assert old in GOOD
    file = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ProfileError) as info:
        load_profile_file(file)
    message = str(info.value)
    assert str(file) in message
    assert f"  {path}: " in message
    assert reason in message


def test_even_only_needs_even_limit(tmp_path: Path) -> None:
    text = GOOD.replace(
        "max_registers_per_read = 60", "max_registers_per_read = 61\nregisters_even_only = true"
    )
    with pytest.raises(ProfileError, match="even max_registers_per_read"):
        load_profile_file(write(tmp_path, text))


def test_value_wider_than_read_limit(tmp_path: Path) -> None:
    text = GOOD.replace("max_registers_per_read = 60", "max_registers_per_read = 1")
    with pytest.raises(ProfileError, match="energy_import: 2 registers exceed max_registers_per_read=1"):
        load_profile_file(write(tmp_path, text))


def test_toml_syntax_error_names_file(tmp_path: Path) -> None:
    file = write(tmp_path, GOOD + "\n[quantities.oops\n")
    with pytest.raises(ProfileError, match=r"acme-m1\.toml is not valid TOML.*line"):
        load_profile_file(file)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read firmware profile"):
        load_profile_file(tmp_path / "absent.toml")


def test_resolve_profile_by_id_or_relative_path(tmp_path: Path) -> None:
    assert resolve_profile("eastron-sdm630").id == "eastron-sdm630"
    write(tmp_path, GOOD, name="custom.toml")
    assert resolve_profile("custom.toml", base_dir=tmp_path).id == "acme-m1"
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", GOOD, name="m.toml")
    assert resolve_profile("sub/m.toml", base_dir=tmp_path).id == "acme-m1"
    assert resolve_profile(str(tmp_path / "custom.toml")).id == "acme-m1"


def test_identity_validation(tmp_path: Path) -> None:
    text = GOOD + '\n[[identity]]\nname = "model"\naddress = 0x8960\nfunction = 3\ndatatype = "string"\n'
    with pytest.raises(ProfileError, match=r"identity\[0\]: a string identity register needs count"):
        load_profile_file(write(tmp_path, text))
