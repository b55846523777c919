"""Intervals close only on trusted time; readings taken meanwhile are kept and placed later."""

from __future__ import annotations

from pathlib import Path

from stellar_sdk import Keypair

from gateway.clock import ManualClock
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.ledger.writer import ReadingWriter
from gateway.status import GatewayStatus
from gateway.timetrust import AlwaysSynced, KernelSync, TimeTrust


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


def test_kernel_sync_query_runs_on_this_libc() -> None:
    # Smoke test of the ctypes call (symbol, buffer, return code); the answer depends on the machine.
    assert isinstance(KernelSync().synchronised(), bool)


async def test_a_step_while_trusted_suspends_trust_until_the_clock_holds_still(tmp_path: Path) -> None:
    clock = ManualClock(start=T0)
    trust = TimeTrust(clock, AlwaysSynced(), max_step_s=2.0, settle_s=300)
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=Keypair.random())
    status = GatewayStatus("gw", "G", clock.now())
    writer = ReadingWriter(ledger, clock, status, trust=trust)

    async def minutes(n: int, start_wh: int) -> None:
        for k in range(n):
            await writer.submit(Reading("m1", round(clock.now() * 1000), start_wh + 10 * k))
            clock.advance(60)
            if k % 5 == 4:
                await writer.flush()  # the writer looks at the clock at every commit
        await writer.flush()

    await minutes(16, 1_000)
    assert status.time_trusted is True
    closed = ledger.max_credit_id
    assert closed == 1

    clock.step_wall(86_400)  # somebody sets the clock a day ahead
    await minutes(4, 1_160)  # 4 minutes: still settling
    assert status.time_trusted is False
    assert "held still" in status.time_trust_reason
    assert ledger.max_credit_id == closed, "nothing closes while the clock is settling"

    clock.step_wall(-86_400)  # ... and back again (NTP, or the operator noticing): settling starts over
    await minutes(4, 1_200)
    assert status.time_trusted is False
    assert ledger.max_credit_id == closed

    await minutes(7, 1_240)  # 7 more minutes without a jump: more than the 300 s settle time
    assert status.time_trusted is True
    assert status.readings_held == 0
    intervals = await ledger.intervals("m1", 0, 2**40)
    # Back on the original timeline: every reading in its true quarter-hour, actual and exact.
    assert [(start - int(T0), wh, quality) for start, _, wh, quality in intervals] == [
        (0, 150, "A"), (900, 150, "A")]
    assert trust.steps == 2
    await ledger.close()
