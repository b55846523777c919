"""check-config tells the installer which energy channels each meter will have, before the first poll."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main

PROFILES = Path(__file__).resolve().parents[2] / "firmware_profiles"


def test_check_config_lists_each_meters_channels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
gateway_id = "gw"
data_dir = "{tmp_path / 'data'}"
[[buses]]
name = "line"
host = "127.0.0.1"
  [[buses.meters]]
  id = "house"
  unit_id = 1
  profile = "eastron-sdm630"
  quantities = ["power_total"]
  [[buses.meters]]
  id = "old"
  unit_id = 2
  profile = "orno-we514"
[mqtt]
host = "127.0.0.1"
  [[mqtt.meters]]
  id = "plug"
  topic = "tele/plug/SENSOR"
  format = "tasmota"
  [[mqtt.meters]]
  id = "sml"
  topic = "tele/sml/SENSOR"
  format = "tasmota-sml"
  value_path = "SML.Total_in"
  export_path = "SML.Total_out"
  [[mqtt.meters]]
  id = "shelly"
  topic = "shelly/em"
  value_path = "total"
""")
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out
    lines = {line.split(":")[0].strip(): line.strip() for line in out.splitlines() if "channels" in line}
    assert lines["meter house"] == ("meter house: channels import + export (energy_import FC04 0x0048, "
                                    "energy_export FC04 0x004a)"), "a listed quantity does not drop export"
    assert lines["meter old"] == ("meter old: channels import only (energy_import FC03 0xa000); "
                                  "orno-we514 maps no export register")
    assert lines["meter plug"] == ("meter plug: channels import + export (ENERGY.Total; ENERGY.ExportActive when "
                                   "the device sends it, else import only)")
    assert lines["meter sml"] == "meter sml: channels import + export (SML.Total_in; SML.Total_out)"
    assert lines["meter shelly"] == "meter shelly: channels import only (total); set export_path for its feed-in"
