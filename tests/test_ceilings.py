"""Every meter has a power ceiling (config, profile rating, or the default), and check-config says which."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import parse_config
from gateway.config.ceiling import modbus_ceiling, mqtt_ceiling
from gateway.intervals.plausibility import DEFAULT_MAX_POWER_W
from gateway.profiles import Profile, builtin_profile, builtin_profiles
from gateway.schema import ValidationError

ENERGY = {"energy_import": {"address": 0, "function": 4, "datatype": "float32", "scale": 1000, "unit": "Wh"}}


def _profile(**fields: object) -> Profile:
    return Profile.model_validate({"id": "x-y", "manufacturer": "X", "model": "Y", "max_registers_per_read": 50,
                                   "quantities": ENERGY, **fields})


def test_every_builtin_profile_agrees_with_its_rating_or_says_why_it_has_none() -> None:
    for profile in builtin_profiles():
        if profile.ct_connected:
            assert profile.ceiling_w is None, profile.id
            continue
        if profile.rated_power_w is not None and profile.max_power_w is not None:
            assert profile.rated_power_w <= profile.max_power_w <= profile.rated_power_w * 1.05, profile.id
    sdm630 = builtin_profile("eastron-sdm630")
    assert (sdm630.phases, sdm630.max_current_a, sdm630.max_voltage_v) == (3, 100.0, 276.0)
    assert sdm630.ceiling_w == 83_000.0, "the existing number stands, now backed by the rating"
    assert builtin_profile("janitza-b23").ceiling_w == 3 * 65 * 276, "from the rating alone"


def test_a_profile_rating_is_checked_against_its_max_power() -> None:
    assert _profile(phases=1, max_current_a=45.0, max_voltage_v=300.0).ceiling_w == 13_500
    with pytest.raises(ValidationError, match="contradicts the rating"):
        _profile(max_power_w=10_000.0, phases=1, max_current_a=45.0, max_voltage_v=300.0)  # below it
    with pytest.raises(ValidationError, match="contradicts the rating"):
        _profile(max_power_w=20_000.0, phases=1, max_current_a=45.0, max_voltage_v=300.0)  # far above it
    with pytest.raises(ValidationError, match="needs all of"):
        _profile(phases=3, max_current_a=45.0)
    with pytest.raises(ValidationError, match="CT-connected"):
        _profile(ct_connected=True, max_power_w=20_000.0)


def test_the_ceiling_comes_from_config_then_profile_then_the_default() -> None:
    cfg = parse_config("""
gateway_id = "gw"
[[buses]]
name = "b"
host = "127.0.0.1"
  [[buses.meters]]
  id = "own"
  unit_id = 1
  profile = "eastron-sdm630"
  max_power_w = 20000
  [[buses.meters]]
  id = "rated"
  unit_id = 2
  profile = "janitza-b23"
  [[buses.meters]]
  id = "ct"
  unit_id = 3
  profile = "abb-b24"
[mqtt]
  [[mqtt.meters]]
  id = "plug"
  topic = "p"
  format = "number"
""")
    own, rated, ct = cfg.buses[0].meters
    assert modbus_ceiling(own, builtin_profile("eastron-sdm630")).watts == 20_000
    assert modbus_ceiling(rated, builtin_profile("janitza-b23")).source == "profile janitza-b23: 3 x 65 A x 276 V"
    ct_ceiling = modbus_ceiling(ct, builtin_profile("abb-b24"))
    assert (ct_ceiling.watts, ct_ceiling.is_default) == (DEFAULT_MAX_POWER_W, True)
    assert "CT primary" in ct_ceiling.hint
    assert cfg.mqtt is not None
    plug = mqtt_ceiling(cfg.mqtt.meters[0])
    assert (plug.watts, plug.is_default) == (DEFAULT_MAX_POWER_W, True)


def test_check_config_shows_each_meters_ceiling_and_warns_about_defaults(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(f"""
gateway_id = "gw"
data_dir = "{tmp_path / 'data'}"
[[buses]]
name = "b"
host = "127.0.0.1"
  [[buses.meters]]
  id = "flat-1"
  unit_id = 1
  profile = "eastron-sdm630"
[mqtt]
  [[mqtt.meters]]
  id = "plug"
  topic = "p"
  format = "number"
  [[mqtt.meters]]
  id = "heater"
  topic = "h"
  format = "number"
  max_power_w = 3700
""")
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "  meter flat-1: power ceiling 83,000 W (profile eastron-sdm630 max_power_w)" in out
    assert "  meter heater: power ceiling 3,700 W (config max_power_w)" in out
    [warning] = [line for line in out if "plug" in line and "ceiling" in line]
    assert warning.startswith("  warning: meter plug: power ceiling 100,000 W (default)")
    assert "set max_power_w" in warning
