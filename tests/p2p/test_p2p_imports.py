"""[p2p] alone loads no stellar-sdk (records are made and signed with PyNaCl); [soroban] loads it, and no httpx."""

from __future__ import annotations

from pathlib import Path

import pytest
from stellar_sdk import Keypair as SdkKeypair
from stellar_sdk import StrKey

from tests.test_imports import BASE, _loaded_by_daemon

AGREEMENT = f"""
[[p2p.agreements]]
id = 1
provider_meter = "m1"
provider = "{SdkKeypair.random().public_key}"
consumer = "{SdkKeypair.random().public_key}"
kwh = 10
price_per_kwh = 50
start = 2026-06-01T00:00:00Z
deadline = 2026-06-08T00:00:00Z
"""
SOROBAN = f"""
[soroban]
rpc_url = "http://127.0.0.1:9/soroban/rpc"
contract_id = "{StrKey.encode_contract(bytes(32))}"
network_passphrase = "Standalone Network ; February 2017"
"""


@pytest.mark.slow
def test_agreements_alone_load_no_stellar_sdk(tmp_path: Path) -> None:
    # [p2p] is still a pydantic model, loaded only because the file has the section (gateway.schema.Lazy)
    assert _loaded_by_daemon(tmp_path, BASE.format(data=tmp_path / "a", web="false") + AGREEMENT) == ["pydantic"]


@pytest.mark.slow
def test_soroban_loads_the_sdk_and_no_second_http_client(tmp_path: Path) -> None:
    # Soroban RPC goes through stellar-sdk's own requests (cloud_sync.horizon_http), not httpx
    config = BASE.format(data=tmp_path / "b", web="false") + AGREEMENT + SOROBAN
    assert _loaded_by_daemon(tmp_path, config) == ["pydantic", "stellar_sdk"]
