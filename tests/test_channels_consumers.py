"""Readers of the ledger that know no channel get import (consumption) only, never export mixed in."""

from __future__ import annotations

from pathlib import Path

from stellar_sdk import Keypair

from gateway.channels import Channel
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.reports.source import ReadOnlyLedger

T0 = 1_767_225_600_000


async def test_the_reports_source_reads_import_intervals_only(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=Keypair.random())
    try:
        readings = [Reading("m", T0 + k * 60_000, 1_000 + 10 * k) for k in range(61)]
        readings += [Reading("m", T0 + k * 60_000, 500 + 3 * k, channel=Channel.EXPORT) for k in range(61)]
        await ledger.commit_readings(readings, now_ms=1)
        imported = await ledger.stored_intervals("m", 0, 2**40)
        exported = await ledger.stored_intervals("m", 0, 2**40, channel=Channel.EXPORT)
        assert [iv.wh for iv in imported] == [150] * 4
        assert [iv.wh for iv in exported] == [45] * 4
    finally:
        await ledger.close()
    source = await ReadOnlyLedger.open(tmp_path)
    try:
        assert await source.stored_intervals("m", 0, 2**40) == imported
    finally:
        await source.close()
