"""An overbooked RS-485 line, end to end: real frames over a pty on a simulated 9600-baud wire.

Issue 11: with poll 1 s where the plan needs 1.53 s, meters 1-3 were read every 1.0 s and meters
5-16 every 2.0 s, and the log got about six ``cycle_overrun`` warnings a second. Here six SDM630s
polled for six quantities every 0.4 s need 0.575 s of wire per cycle: every meter must get the same
share, the line's status must say what period it achieves, and the log must say so once when the
overload starts and once when it ends (half the meters then stop answering and are backed off, so
the rest fit again). Then check-config, which must warn with the period the read plans need.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.acquisition.modbus import ModbusBus
from gateway.acquisition.read_plan import WireCost
from gateway.channels import Channel
from gateway.cli import main as cli_main
from gateway.clock import SystemClock
from gateway.config import BusConfig
from gateway.intervals import Reading
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import SimulatedMeter
from gateway.sim.rtu_line import LineOfMeters, RtuLine
from gateway.sim.wire import Wire
from gateway.status import GatewayStatus, MeterHealth

SDM630 = builtin_profile("eastron-sdm630")
SIX = ("energy_import", "energy_export", "power_total", "voltage_l1", "current_l1", "frequency")
METERS = 6
POLL_S = 0.4
PLAN_S = 0.0958
"""Wire time of one six-quantity SDM630 poll at 9600 8N1 (three requests): six need 0.575 s."""
OVERLOAD_S = 8.0
"""Long enough to measure a dozen cycles: a mean over four gaps moved by one late wake-up on a busy box."""
SETTLE_S = 2.0
"""Shares are measured from 2 s into the overload: in one CI run of three, meters 1-2 came out 10 % slower
over a window starting at 1 s (a transient after start, not yet explained); item 4 asks for the steady share."""
CLEAR_S = 10 * POLL_S
"""The schedule's hold before it calls an overload over (OVERLOAD_CLEAR_PERIODS shortest periods)."""
DEADLINE_S = 20.0
"""Bound on waiting for the overload to end on a loaded CI box; it takes about six seconds."""


async def test_overbooked_line_shares_alike_and_says_so_once_each_way(tmp_path: Path) -> None:
    clock = SystemClock()
    epoch = math.floor(clock.now())
    meters = [SimulatedMeter(f"m{u}", u, SDM630, LoadModel.for_meter(f"m{u}", epoch)) for u in range(1, METERS + 1)]
    sim = LineOfMeters(meters, clock)
    wire = Wire(WireCost(bits_per_char=10, baud=9600))
    line = RtuLine(sim.devices, tmp_path / "ttyRS485", wire=wire)
    cfg = BusConfig.model_validate({
        "name": "rs485", "kind": "rtu", "device": str(line.path), "baud": 9600, "timeout_s": 0.1, "retries": 0,
        "meters": [{"id": m.meter_id, "unit_id": m.unit_id, "profile": "eastron-sdm630", "poll_s": POLL_S}
                   for m in meters],
    })
    status = GatewayStatus("gw", "key", clock.now())
    readings: list[Reading] = []

    async def submit(reading: Reading) -> None:
        if reading.channel is Channel.IMPORT:  # one reading per poll; channels: test_acq_channels.py
            readings.append(reading)

    bus = ModbusBus(cfg, {m.meter_id: SDM630 for m in meters}, clock, submit, status, wanted=SIX, use_lock=False)
    lstat = status.lines["rs485"]
    assert lstat.needed_period_s == pytest.approx(METERS * PLAN_S, rel=0.01)
    with capture_logs() as logs:
        line.start()
        task = asyncio.create_task(bus.run())
        try:
            await asyncio.sleep(1.0 + OVERLOAD_S)
            measured_from = (clock.now() - OVERLOAD_S) * 1000
            assert lstat.overloaded
            achieved = lstat.achievable_period_s
            # Half the meters stop answering (exception 4, at once) and are backed off: the rest fit.
            for device in sim.devices[METERS // 2:]:
                device.mode = "exception"
            for _ in range(int(DEADLINE_S / 0.1)):
                if not lstat.overloaded:
                    break
                await asyncio.sleep(0.1)
            ended_after = clock.now()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            line.stop()

    # Every meter got the same share: its mean period within 10 % of the others'.
    means = {}
    for m in meters:
        steady_from, until = measured_from + SETTLE_S * 1000, measured_from + (OVERLOAD_S - 1) * 1000
        ts = [r.t_ms for r in readings if r.meter == m.meter_id and steady_from <= r.t_ms <= until]
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        assert len(gaps) >= 2, (m.meter_id, ts)
        means[m.meter_id] = statistics.mean(gaps) / 1000
    mid = statistics.median(means.values())
    assert all(abs(v - mid) <= 0.10 * mid for v in means.values()), means
    # Not the configured 0.4 s: about the wire time (a few % under it: the plan rounds each frame gap up).
    assert 0.95 * METERS * PLAN_S <= mid <= 1.25 * METERS * PLAN_S, means
    # The status said the period the line achieved, not the configured one.
    assert achieved == pytest.approx(mid, rel=0.10)
    assert lstat.poll_period_s == POLL_S
    # One warning when the overload started, one when it ended; none per overrun.
    events = [e["event"] for e in logs if e["log_level"] == "warning" and e["event"].startswith(("line_", "cycle"))]
    assert events == ["line_overloaded", "line_overload_ended"], events
    assert not lstat.overloaded
    assert lstat.achievable_period_s == POLL_S
    assert lstat.cycle_overruns > 10
    assert ended_after < measured_from / 1000 + OVERLOAD_S + CLEAR_S + DEADLINE_S
    assert all(status.meters[m.meter_id].health is MeterHealth.ONLINE for m in meters[: METERS // 2])
    assert wire.gap_violations == 0


async def _no_submit(_: Reading) -> None:
    return None


def test_check_config_warns_with_the_minimum_feasible_period(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    meters = "".join(f'[[buses.meters]]\nid = "m{u}"\nunit_id = {u}\nprofile = "eastron-sdm630"\npoll_s = 1\n'
                     for u in range(1, 17))
    config = tmp_path / "gateway.toml"
    config.write_text(f'gateway_id = "gw"\ndata_dir = "{tmp_path / "data"}"\n[[buses]]\nname = "rs485-1"\n'
                      f'kind = "rtu"\ndevice = "/dev/ttyUSB0"\n{meters}'
                      '[[buses]]\nname = "rs485-2"\nkind = "rtu"\ndevice = "/dev/ttyUSB1"\n'
                      '[[buses.meters]]\nid = "n1"\nunit_id = 1\nprofile = "eastron-sdm630"\npoll_s = 1\n')
    assert cli_main(["check-config", str(config)]) == 0  # a warning, not a refusal
    out = capsys.readouterr().out
    # Default quantities: three requests per SDM630 at 9600 8N1, voltage and power 2 registers each (25.0 ms),
    # and the import register with the export one after it in one 4-register request (29.2 ms): the export
    # channel costs two registers on the wire, not a request.
    per_meter = 2 * WireCost().transaction_time(2) + WireCost().transaction_time(4)
    needed = 16 * per_meter
    warning = next(line for line in out.splitlines() if "rs485-1" in line)
    assert warning.strip().startswith("warning: bus rs485-1: polls need 127% of the line")
    assert f"minimum feasible period is {needed:.3f} s: use poll_s = 2" in warning
    fits = next(line for line in out.splitlines() if "rs485-2" in line)
    assert fits.strip() == (f"bus rs485-2: polls need {per_meter:.0%} of the line ({per_meter:.3f} s of wire time "
                            "per 1 s poll at 9600 baud)")
