"""`meter-gateway status`: the page's facts in the terminal, asked of the running gateway with its token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.status import MeterHealth
from gateway.web.auth import TOKEN_FILE
from tests.web.conftest import Site


async def test_status_prints_meters_lines_and_uplinks(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    token_file = str(site.data_dir / TOKEN_FILE)
    code = await asyncio.to_thread(main, ["status", "--url", site.url, "--token-file", token_file])
    out = capsys.readouterr().out
    assert code == 0
    assert f"gateway at {site.url}" in out
    [row] = [ln for ln in out.splitlines() if ln.startswith("m1 ")]
    assert row.split()[1] in {h.value for h in MeterHealth}, row
    assert "Lines" in out
    assert "line " in out


async def test_status_with_a_wrong_token_says_so(site: Site, capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    wrong = site.data_dir / "other.token"
    wrong.write_text("x" * 32)
    code = await asyncio.to_thread(main, ["status", "--url", site.url, "--token-file", str(wrong)])
    assert code == 1
    assert "refused the token" in capsys.readouterr().err


def test_status_without_a_running_gateway_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "t"
    token.write_text("y" * 32)
    assert main(["status", "--url", "http://127.0.0.1:9", "--token-file", str(token)]) == 1
    assert "is it running?" in capsys.readouterr().err
