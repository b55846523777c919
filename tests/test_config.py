"""Config validation: every problem, with its path and line, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import InvalidConfig, load_config, parse_config
from gateway.sim import children

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_annotated_example_is_valid() -> None:
    cfg = load_config(EXAMPLES / "gateway.toml")
    assert cfg.gateway_id == "gw-berlin-0001"
    assert cfg.all_meter_ids() == ["building-a", "building-b", "heat-pump", "pv-house"]


def test_check_config_reports_all_three_mistakes_with_paths_and_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check-config", str(EXAMPLES / "broken.toml")])
    err = capsys.readouterr().err
    assert code == 2
    assert "3 problem(s)" in err
    assert "line 4: site_timezone: unknown IANA time zone 'Europe/Berln'" in err
    assert "line 18: buses[0].meters[1].unit_id:" in err
    assert "line 24: buses[0].meters[2].profile: unknown firmware profile 'eastron-sdm999'" in err


def test_check_config_as_a_command_exits_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(EXAMPLES / "broken.toml")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "buses[0].meters[2].profile" in proc.stderr


def test_unknown_key_duplicate_ids_and_bad_poll_period() -> None:
    text = """
gateway_id = "gw"
pol_s = 3

[[buses]]
name = "a"
host = "127.0.0.1"
  [[buses.meters]]
  id = "m"
  unit_id = 1
  profile = "eastron-sdm630"
  poll_s = 7

[mqtt]
  [[mqtt.meters]]
  id = "m"
  topic = "t"
  value_path = "x"
"""
    with pytest.raises(InvalidConfig) as info:
        parse_config(text)
    found = {(p.path, p.line) for p in info.value.problems}
    assert ("pol_s", 3) in found
    assert ("buses[0].meters[0].poll_s", 12) in found
    assert ("buses[0].meters[0].id", 9) in found
    assert ("mqtt.meters[0].id", 16) in found


def test_syntax_error_names_the_line() -> None:
    with pytest.raises(InvalidConfig) as info:
        parse_config('gateway_id = "gw"\n[web\nport = 1\n')
    assert info.value.problems[0].line == 2


def test_run_refuses_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('gateway_id = "gw"\n[web]\nport = "eighty"\n')
    proc = children.run([sys.executable, "-m", "gateway", "run", "--config", str(bad)],
                        capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 2
    assert "line 3: web.port" in proc.stderr


def _deployable(tmp_path: Path, *, token: bool, data_dir: str = "state") -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(f'''gateway_id = "gw"
data_dir = "{data_dir}"

[uplinks.billing_api]
url = "http://127.0.0.1:9"
token_file = "api.token"
''')
    if token:
        (tmp_path / "api.token").write_text("secret\n")
    return config


def test_check_config_reports_a_missing_token_file_and_an_uncreatable_data_dir(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("")
    config = _deployable(tmp_path, token=False, data_dir="a-file/state")
    assert main(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err
    assert f"line 2: data_dir: {tmp_path / 'a-file' / 'state'} cannot be created" in err
    assert f"line 6: uplinks.billing_api.token_file: {tmp_path / 'api.token'} does not exist" in err
    assert "mode 0600" in err


def test_run_refuses_before_touching_anything_when_the_token_file_is_missing(tmp_path: Path) -> None:
    config = _deployable(tmp_path, token=False)
    proc = children.run([sys.executable, "-m", "gateway", "run", "--config", str(config)],
                        capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 2
    assert "token_file" in proc.stderr
    assert not (tmp_path / "state").exists()


def test_secret_files_are_relative_to_the_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _deployable(tmp_path, token=True)
    cfg = load_config(config)
    assert cfg.uplinks.billing_api is not None
    assert cfg.uplinks.billing_api.token_file == tmp_path / "api.token"
    assert main(["check-config", str(config)]) == 0
    assert "OK" in capsys.readouterr().out


def test_two_buses_on_one_line_a_profile_without_import_energy_and_a_shadowed_topic(tmp_path: Path) -> None:
    (tmp_path / "power-only.toml").write_text('''
id = "acme-p1"
manufacturer = "Acme"
model = "P1"
max_registers_per_read = 40

[quantities.power_total]
address = 0x0C
function = 4
datatype = "float32"
scale = 1.0
unit = "W"
''')
    text = f"""
gateway_id = "gw"

[[buses]]
name = "a"
host = "10.0.0.5"
  [[buses.meters]]
  id = "m1"
  unit_id = 1
  profile = "{tmp_path / 'power-only.toml'}"

[[buses]]
name = "b"
host = "10.0.0.5"
port = 502
  [[buses.meters]]
  id = "m2"
  unit_id = 2
  profile = "eastron-sdm630"

[[buses]]
name = "c"
host = "10.0.0.5"
port = 503

[mqtt]
  [[mqtt.meters]]
  id = "any-flat"
  topic = "site/+/SENSOR"
  value_path = "e"
  [[mqtt.meters]]
  id = "flat-2"
  topic = "site/flat2/SENSOR"
  value_path = "e"
  [[mqtt.meters]]
  id = "garage"
  topic = "garage/#"
  value_path = "e"
  [[mqtt.meters]]
  id = "garage-2"
  topic = "garage/2/SENSOR"
  value_path = "e"
"""
    with pytest.raises(InvalidConfig) as info:
        parse_config(text, base_dir=tmp_path)
    found = {p.path: p.message for p in info.value.problems}
    assert "uses the same line as bus 'a'" in found["buses[1].host"]
    assert "buses[2].host" not in found, "another port is another endpoint"
    assert "no energy_import" in found["buses[0].meters[0].profile"]
    assert "matched by meter 'any-flat'" in found["mqtt.meters[1].topic"]
    assert "matched by meter 'garage'" in found["mqtt.meters[3].topic"]
    assert len(found) == 4, found
