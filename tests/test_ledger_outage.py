"""The writer through a storage outage, in-process: readings kept and retried, the oldest shed, one alarm.

The same behaviour through the real daemon on a full tmpfs is ``tests/test_storage_faults.py``
(root only); this one runs everywhere and pins the details.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from stellar_sdk import Keypair

from gateway.clock import ManualClock
from gateway.errors import LedgerDiskFull
from gateway.intervals import Reading
from gateway.ledger import outage
from gateway.ledger.store import CommitResult, Ledger
from gateway.ledger.writer import ReadingWriter
from gateway.status import GatewayStatus

T0 = 1_767_225_600_000


class FullDisk:
    """A ledger whose disk is full until ``free()``; every commit attempt is counted."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.full = True
        self.attempts = 0

    def free(self) -> None:
        self.full = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._ledger, name)  # everything but commits reaches the real ledger

    async def commit_readings(self, readings: Sequence[Reading], *, now_ms: int) -> CommitResult:
        self.attempts += 1
        if self.full:
            raise LedgerDiskFull(f"could not commit {len(readings)} readings: the file system is full")
        return await self._ledger.commit_readings(readings, now_ms=now_ms)


async def test_readings_are_kept_through_a_full_disk_the_oldest_shed_and_committed_once_it_is_free(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outage, "BACKLOG_LIMIT", 50)
    monkeypatch.setattr(outage, "RETRY_FIRST_S", 0.05)
    monkeypatch.setattr(outage, "RETRY_MAX_S", 0.1)
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=Keypair.random())
    disk = FullDisk(ledger)
    status = GatewayStatus("gw", "G", 0)
    writer = ReadingWriter(disk, ManualClock(), status, flush_s=0.01)  # type: ignore[arg-type]
    task = asyncio.create_task(writer.run())
    try:
        for k in range(80):  # 80 minutes of one meter, while nothing can be written
            await writer.submit(Reading("m", T0 + k * 60_000, 1000 + 10 * k))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.3)
        assert writer.outage.failing
        assert "Disk full" in status.alarms[outage.ALARM]
        assert "30 oldest were dropped" in status.alarms[outage.ALARM]
        assert len(writer.outage.backlog) == 50, "bounded"
        assert writer.outage.make_room.is_set(), "the maintenance is called at once"
        attempts = disk.attempts
        assert attempts < 20, "retried with a backoff, not on every reading"
        disk.free()
        await asyncio.sleep(0.5)
        assert not writer.outage.failing
        assert outage.ALARM not in status.alarms
        assert status.readings_committed == 50
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    state = ledger.meter_state("m")
    assert state.last_wh == 1000 + 10 * 79, "the newest reading made it"
    intervals = await ledger.stored_intervals("m", 0, 2**40)
    await ledger.close()
    # What was shed is the oldest raw readings only: the timeline starts at the oldest reading kept.
    assert intervals
    assert intervals[0].start * 1000 >= T0 + 30 * 60_000


async def test_a_stop_during_the_outage_lets_go_of_what_it_cannot_commit(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=Keypair.random())
    disk = FullDisk(ledger)
    status = GatewayStatus("gw", "G", 0)
    writer = ReadingWriter(disk, ManualClock(), status, flush_s=0.01)  # type: ignore[arg-type]
    task = asyncio.create_task(writer.run())
    for k in range(5):
        await writer.submit(Reading("m", T0 + k * 60_000, 1000 + 10 * k))
    await asyncio.sleep(0.1)
    task.cancel()
    results = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError), "the writer stops; the storage error is not raised"
    assert not writer.outage.backlog
    await ledger.close()
