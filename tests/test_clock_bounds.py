"""Time that cannot be real never becomes intervals (issue 13, item 2).

Meter clocks are judged against the gateway's trusted clock; readings older than the ledger's
horizon are refused; a battery clock (``trust = "rtc"``) reading 1970 or 2100 is not trusted until
NTP or the ledger's newest reading confirms it — so it neither issues credits in 2100 nor wedges the
meter afterwards (before: every later reading was refused as older than the last, until 2100).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from stellar_sdk import Keypair

from gateway.clock import ManualClock
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.ledger.writer import ReadingWriter
from gateway.status import GatewayStatus, MeterStatus
from gateway.timetrust import AlwaysSynced, KernelSync, TimeTrust, source_for
from gateway.web.app import _problems

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
Y2100 = 4_102_444_800.0  # 2100-01-01T00:00:00Z
DAY = 86_400.0


class Kernel:
    """Stands in for the kernel's NTP flag (adjtimex), which a test cannot flip."""

    synced = False


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Kernel:
    flag = Kernel()
    monkeypatch.setattr(KernelSync, "synchronised", lambda self: flag.synced)
    return flag


def _status(clock: ManualClock, *meters: str) -> GatewayStatus:
    status = GatewayStatus("gw", "G", clock.now())
    for meter in meters:
        status.meters[meter] = MeterStatus(meter, "mqtt", f"site/{meter}")
    return status


async def _credits(ledger: Ledger) -> list[tuple[int, int, str]]:
    return await ledger.intervals("m", 0, 2**40)


async def test_meter_stamps_far_from_the_trusted_clock_are_refused_and_flag_the_meter(tmp_path: Path) -> None:
    clock = ManualClock(start=T0 + 10 * DAY)
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=Keypair.random())
    status = _status(clock, "m")
    writer = ReadingWriter(ledger, clock, status, trust=TimeTrust(clock, AlwaysSynced()))

    async def publish(stamp_s: float, wh: int) -> None:
        await writer.submit(Reading("m", round(stamp_s * 1000), wh, "mqtt", meter_clock=True))

    # A Tasmota booted without NTP: 1970 plus its uptime. Before, this started the meter's timeline in
    # 1970 and its next honest message filled every quarter-hour since.
    for k in range(3):
        await publish(60.0 * k, 1_000 + k)
    await publish(clock.now() + 3_600, 1_003)  # and one an hour ahead
    await writer.flush()
    assert ledger.meter_state("m").last_t_ms is None, "no timeline starts in 1970"
    meter = status.meters["m"]
    assert (meter.rejected["meter_clock_behind"], meter.rejected["meter_clock_ahead"]) == (3, 1)
    assert meter.clock_wrong is not None
    assert "ahead of the gateway's" in meter.clock_wrong
    page = _problems([], [], status)
    assert any("Meter m: meter clock wrong" in line and "enable NTP" in line for line in page)

    # Its clock set: a broker's backlog two days old is fine (queued while the gateway was down) ...
    await publish(clock.now() - 2 * DAY, 5_000)
    await publish(clock.now() - 2 * DAY + 900, 5_100)
    await writer.flush()
    # ... a timestamp back before the last one is not a late reading but a meter clock gone back.
    await publish(clock.now() - 3 * DAY, 4_000)
    await writer.flush()
    assert status.meters["m"].clock_wrong is None
    assert not any("clock wrong" in line for line in _problems([], [], status))
    assert ledger.meter_state("m").last_t_ms == round((clock.now() - 2 * DAY + 900) * 1000)
    assert meter.rejected["out_of_order"] == 1
    await ledger.close()


async def test_a_reading_held_past_the_ledgers_horizon_is_refused(tmp_path: Path, kernel: Kernel) -> None:
    clock = ManualClock(start=T0)
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=Keypair.random())
    status = _status(clock, "m")
    writer = ReadingWriter(ledger, clock, status, trust=TimeTrust(clock, source_for("ntp")), horizon_s=7 * DAY)
    await writer.submit(Reading("m", round(clock.now() * 1000), 1_000))
    await writer.flush()
    assert status.readings_held == 1, "no NTP yet"
    clock.advance(8 * DAY)
    kernel.synced = True
    await writer.submit(Reading("m", round(clock.now() * 1000), 2_000))
    await writer.flush()
    assert status.meters["m"].rejected["before_horizon"] == 1
    assert status.meters["m"].clock_wrong is None, "the gateway's own stamp: the meter's clock is not to blame"
    assert ledger.meter_state("m").last_t_ms == round(clock.now() * 1000)
    await ledger.close()


async def _readings(writer: ReadingWriter, clock: ManualClock, minutes: int, start_wh: int) -> None:
    for k in range(minutes):
        await writer.submit(Reading("m", round(clock.now() * 1000), start_wh + 100 * k))
        clock.advance(60)
        if k % 10 == 9:
            await writer.flush()
    await writer.flush()


@pytest.mark.parametrize("rtc", [60.0, Y2100], ids=["1970", "2100"])
async def test_a_battery_clock_far_off_at_boot_waits_for_ntp_and_nothing_is_wedged(
        tmp_path: Path, kernel: Kernel, rtc: float) -> None:
    clock = ManualClock(start=rtc)
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=Keypair.random())  # a new box: no ledger yet
    status = _status(clock, "m")
    trust = TimeTrust(clock, source_for("rtc"), max_step_s=2.0, settle_s=300)
    writer = ReadingWriter(ledger, clock, status, trust=trust)
    await _readings(writer, clock, 20, 1_000)  # 20 minutes on the wrong clock
    assert status.time_trusted is False, "before: trusted at once, credits issued in 1970 / 2100"
    assert "battery clock reads" in status.time_trust_reason
    assert await _credits(ledger) == []
    assert status.readings_held == 20

    # NTP arrives: it steps the clock to the real time and the kernel reports it synchronised.
    clock.step_wall(T0 + 900 - clock.now())
    kernel.synced = True
    await _readings(writer, clock, 40, 3_000)
    assert status.time_trusted is True
    credits = await _credits(ledger)
    assert credits, "the meter is not wedged: before, every reading after NTP was refused as too late"
    assert all(T0 - 1_800 <= start <= T0 + 3_600 for start, _, _, _ in credits), "all on the real timeline"
    assert sum(status.meters["m"].rejected.values()) == 0
    await ledger.close()


async def test_a_battery_clock_ahead_of_the_ledger_by_years_is_caught_against_its_newest_reading(
        tmp_path: Path, kernel: Kernel) -> None:
    key = Keypair.random()
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=key)
    await ledger.commit_readings([Reading("m", round(T0 * 1000), 1_000)], now_ms=round(T0 * 1000))
    await ledger.close()
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=key)  # rebooted with the RTC two years ahead
    clock = ManualClock(start=T0 + 2 * 365 * DAY)
    status = _status(clock, "m")
    writer = ReadingWriter(ledger, clock, status, trust=TimeTrust(clock, source_for("rtc")))
    await _readings(writer, clock, 20, 2_000)
    assert status.time_trusted is False
    assert "ahead of the newest record (2026-01-01T00:00:00Z)" in status.time_trust_reason
    assert await _credits(ledger) == [], "before: two years of substituted credits (70 080)"
    await ledger.close()


async def test_a_plausible_battery_clock_is_trusted_without_ntp(tmp_path: Path, kernel: Kernel) -> None:
    key = Keypair.random()
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=key)
    await ledger.commit_readings([Reading("m", round(T0 * 1000), 1_000)], now_ms=round(T0 * 1000))
    clock = ManualClock(start=T0 + 3 * DAY)  # off for three days: an offline site keeps working
    status = _status(clock, "m")
    writer = ReadingWriter(ledger, clock, status, trust=TimeTrust(clock, source_for("rtc")))
    await _readings(writer, clock, 20, 2_000)
    assert status.time_trusted is True
    assert await _credits(ledger)
    # Going back before what the ledger already holds is not plausible either.
    clock.step_wall(-2 * DAY)
    await _readings(writer, clock, 2, 5_000)
    assert status.time_trusted is False
    assert "before the newest record" in status.time_trust_reason
    await ledger.close()
