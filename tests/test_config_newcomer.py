"""Config mistakes a newcomer makes get a line and a hint, never a traceback or a quiet coercion."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import InvalidConfig, parse_config

BASE = """
gateway_id = "gw"

[[buses]]
name = "a"
host = "127.0.0.1"
  [[buses.meters]]
  id = "m"
  unit_id = 1
  profile = "eastron-sdm630"
  poll_s = {poll}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(InvalidConfig) as info:
        parse_config(text)
    return [str(p) for p in info.value.problems]


def test_a_quoted_poll_period_is_refused_with_its_line() -> None:
    assert parse_config(BASE.format(poll=60)).buses[0].meters[0].poll_s == 60.0
    [problem] = problems(BASE.format(poll='"60"'))
    assert problem.startswith("line 11: buses[0].meters[0].poll_s:"), problem
    assert "without quotes" in problem


def test_a_billing_url_without_scheme_gets_a_url_hint() -> None:
    [problem] = problems('gateway_id = "gw"\n[uplinks.billing_api]\nurl = "billing.example.net"\n')
    assert problem.startswith("line 3: uplinks.billing_api.url:"), problem
    assert "http:// or https://" in problem
    assert "letters, digits" not in problem


def test_a_config_that_is_not_utf8_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gateway.toml"
    path.write_bytes(b'gateway_id = "gw"\n# Z\xfcrich\n')  # saved as Latin-1 by an old editor
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "line 2: (file): not UTF-8 text" in err
    assert "internal error" not in err
    assert "Traceback" not in err
