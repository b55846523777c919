"""Onboarding as the gateway sees it: every step checked, the gateway's own trustline added on request."""

from __future__ import annotations

from pathlib import Path

import pytest
from stellar_sdk import Keypair

from cloud_sync.stellar.onboarding import check
from cloud_sync.stellar.uplink import StellarUplink
from gateway.clock import SystemClock
from gateway.errors import ConfigError
from tests.stellar.gateway_harness import tenant


async def test_a_funded_gateway_is_ready_and_a_new_one_is_told_what_is_missing(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        report = await check(t.cfg, t.keypair)
        assert report.ready, report.lines
        newcomer = Keypair.random()
        missing = await check(t.cfg, newcomer)
        assert not missing.ready
        assert any("does not exist: the utility must fund it with XLM" in line for ok, line in missing.lines if not ok)
        assert t.running.ledger.friendbot(newcomer.public_key).successful
        no_line = await check(t.cfg, newcomer)
        assert any("run this again with --limit X" in line for ok, line in no_line.lines if not ok)
        trusted = await check(t.cfg, newcomer, trust_limit="5000")
        assert any("trustline to KWH" in line and "limit 5000" in line for ok, line in trusted.lines if ok)
        assert any("the utility must pay the allowance" in line for ok, line in trusted.lines if not ok)


async def test_a_gateway_account_that_is_not_this_boxs_key_is_refused(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        other = t.cfg.model_copy(update={"gateway_account": Keypair.random().public_key})

        async def serial(meter: str) -> str:
            return meter

        with pytest.raises(ConfigError, match="is not this box's key"):
            StellarUplink(other, t.ledger, SystemClock(), t.keypair, meters=[], serials=serial)
