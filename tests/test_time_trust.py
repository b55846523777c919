"""Intervals close only on trusted time; readings taken meanwhile are kept and placed later."""

from __future__ import annotations

from pathlib import Path

from stellar_sdk import Keypair

from gateway.clock import ManualClock
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.ledger.writer import ReadingWriter
from gateway.status import GatewayStatus
from gateway.timetrust import KernelSync, TimeTrust


class SwitchableSync:
    """Stands in for the kernel's NTP flag, which a test cannot flip."""

    def __init__(self) -> None:
        self.synced = False

    def synchronised(self) -> bool:
        return self.synced


T0 = 1_767_225_600.0  # a quarter-hour boundary


async def test_readings_are_held_until_trusted_then_restamped_after_a_step(tmp_path: Path) -> None:
    clock = ManualClock(start=T0 - 7 * 86_400)  # the box booted with a week-old clock
    sync = SwitchableSync()
    trust = TimeTrust(clock, sync, max_step_s=2.0)
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=Keypair.random())
    status = GatewayStatus("gw", "G", clock.now())
    writer = ReadingWriter(ledger, clock, status, trust=trust)
    for k in range(31):  # 30 minutes of readings, one a minute, 10 Wh each
        await writer.submit(Reading("m1", round(clock.now() * 1000), 5_000 + 10 * k))
        clock.advance(60)
    await writer.flush()
    assert status.time_trusted is False
    assert status.readings_held == 31
    assert ledger.max_credit_id == 0, "no interval may close on untrusted time"

    # NTP steps the clock forward by exactly a week minus the 31 minutes that passed, and syncs.
    clock.step_wall(7 * 86_400)
    sync.synced = True
    await writer.submit(Reading("m1", round(clock.now() * 1000), 5_000 + 10 * 31))
    await writer.flush()
    assert status.time_trusted is True
    assert status.readings_held == 0
    intervals = await ledger.intervals("m1", 0, 2**40)
    # The held readings moved by the step: they now start at T0 on the true timeline.
    assert [(start, wh) for start, _, wh, _ in intervals] == [(int(T0), 150), (int(T0) + 900, 150)]
    await ledger.close()


def test_kernel_sync_query_answers() -> None:
    assert KernelSync().synchronised() in (True, False)
