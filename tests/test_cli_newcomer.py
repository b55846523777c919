"""Small things a newcomer hit: --version, the licence, the demo's usage errors and its closing hint."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.cli import main
from gateway.sim.hints import bill_hint, cli_command

ROOT = Path(__file__).resolve().parent.parent


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"meter-gateway {version}"


def test_license_file_matches_pyproject() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.parametrize("args", [["--receiver", "http://127.0.0.1:9"],
                                  ["--receiver", "http://127.0.0.1:9", "--receiver-token-file", "/nonexistent"],
                                  ["--receiver-token-file", "/etc/hostname"]])
def test_demo_receiver_without_its_token_file_is_bad_usage(args: list[str], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "demo-data"
    assert main(["demo", "--data-dir", str(data_dir), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --receiver")
    assert not data_dir.exists()  # refused before anything started


def test_closing_hint_has_real_dates_and_a_pasteable_binary(tmp_path: Path) -> None:
    zone = ZoneInfo("Europe/Berlin")
    first = dt.datetime(2026, 11, 30, 23, 30, tzinfo=zone).timestamp()
    last = dt.datetime(2026, 12, 2, 0, 15, tzinfo=zone).timestamp()
    hint = bill_hint("meter-gateway", tmp_path / "gateway.toml", first, last, "Europe/Berlin", "flat-1")
    assert hint == f"meter-gateway bill flat-1 --config {tmp_path / 'gateway.toml'} --from 2026-11-30 --to 2026-12-03"
    venv_bin = tmp_path / ".venv" / "bin" / "meter-gateway"  # not on PATH: the full path is what works
    assert cli_command(str(venv_bin), "/usr/bin/python3") == str(venv_bin)
    assert cli_command("/x/gateway/__main__.py", "/usr/bin/python3") == "/usr/bin/python3 -m gateway"
