"""Config validation: every problem, with its path and line, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import InvalidConfig, load_config, parse_config

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
    proc = subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(bad)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 2
    assert "line 3: web.port" in proc.stderr
