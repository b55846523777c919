"""Fair shares on an overbooked RS-485 line: issue 11's case, measured.

One command: ``.venv/bin/python benchmarks/overbooked.py``

Sixteen SDM630-like meters on a simulated 9600-baud 8N1 half-duplex wire (each frame takes its
bytes' wire time, t3.5 enforced) behind a pseudo-terminal; the real bus scheduler polls six
quantities from each every 1 s, where the read plans need about 1.5 s of wire time per round.
Before issue 11, meters 1-3 were read every 1.0 s, meters 5-16 every 2.0 s, and the log had about
six ``cycle_overrun`` warnings a second.

Printed, after a settling time, over the measured window:

* each meter's mean period, and the spread: slowest over fastest meter (target <= 1.2, i.e. every
  meter within +-10 % of the others);
* the line's achieved period (what the status page and API show) over the mean period the meters
  got (target about 1), and over what the read plans say the line needs (``needed_period_s``, what
  ``check-config`` prints as the minimum feasible period);
* then half the meters stop answering (exception 4) and are backed off, so the rest fit again:
  the line's warnings over the whole run (target: ``line_overloaded`` once, ``line_overload_ended``
  once) and the polls that missed their slot (counted, not logged one by one).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import statistics
import sys
import tempfile
from pathlib import Path

from structlog.testing import capture_logs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without the editable install too

from gateway.acquisition.modbus import ModbusBus
from gateway.acquisition.read_plan import WireCost
from gateway.clock import SystemClock
from gateway.config import BusConfig
from gateway.intervals import Reading
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import SimulatedMeter
from gateway.sim.rtu_line import LineOfMeters, RtuLine
from gateway.sim.wire import Wire
from gateway.status import GatewayStatus

METERS = 16
SIX = ("energy_import", "energy_export", "power_total", "voltage_l1", "current_l1", "frequency")
POLL_S = 1.0
SETTLE_S = 5.0
"""Host seconds before the window: the overload has started and the shares have settled."""
END_TIMEOUT_S = 60.0
"""Bound on waiting for the overload to end once half the meters are gone (it takes about 12 s)."""


async def run(window_s: float) -> int:
    clock = SystemClock()
    profile = builtin_profile("eastron-sdm630")
    epoch = math.floor(clock.now())
    meters = [SimulatedMeter(f"sdm630-{u}", u, profile, LoadModel.for_meter(f"sdm630-{u}", epoch))
              for u in range(1, METERS + 1)]
    sim = LineOfMeters(meters, clock)
    wire = Wire(WireCost(bits_per_char=10, baud=9600))
    readings: list[Reading] = []

    async def submit(reading: Reading) -> None:
        readings.append(reading)

    with tempfile.TemporaryDirectory(prefix="mg-overbooked-") as tmp:
        line = RtuLine(sim.devices, Path(tmp) / "ttyRS485", wire=wire)
        cfg = BusConfig.model_validate({
            "name": "rs485-1", "kind": "rtu", "device": str(line.path), "baud": 9600, "timeout_s": 1.0,
            "retries": 1, "meters": [{"id": m.meter_id, "unit_id": m.unit_id, "profile": "eastron-sdm630",
                                      "poll_s": POLL_S} for m in meters]})
        status = GatewayStatus("gw-bench", "-", clock.now())
        bus = ModbusBus(cfg, {m.meter_id: profile for m in meters}, clock, submit, status, wanted=SIX,
                        use_lock=False)
        lstat = status.lines["rs485-1"]
        with capture_logs() as logs:
            line.start()
            task = asyncio.create_task(bus.run())
            try:
                await asyncio.sleep(SETTLE_S)
                start_ms = clock.now() * 1000
                await asyncio.sleep(window_s)
                end_ms = clock.now() * 1000
                achieved = lstat.achievable_period_s
                for device in sim.devices[METERS // 2:]:
                    device.mode = "exception"
                for _ in range(int(END_TIMEOUT_S / 0.1)):
                    if not lstat.overloaded:
                        break
                    await asyncio.sleep(0.1)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                line.stop()
    means: dict[str, float] = {}
    for m in meters:
        ts = [r.t_ms for r in readings if r.meter == m.meter_id and start_ms <= r.t_ms <= end_ms]
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        if len(gaps) < 2:
            print(f"{m.meter_id}: only {len(ts)} readings in the window")
            return 1
        means[m.meter_id] = statistics.mean(gaps) / 1000
    mean = statistics.mean(means.values())
    needed = lstat.needed_period_s
    warnings = [e["event"] for e in logs if e["log_level"] in ("warning", "error")
                and e["event"].startswith(("line_", "cycle_"))]
    print(f"{METERS} SDM630s, six quantities, poll_s = {POLL_S:g} on a 9600-baud RTU line; "
          f"{window_s:.0f} s measured after {SETTLE_S:.0f} s")
    print("mean period per meter (s): " + " ".join(f"{v:.2f}" for v in means.values()))
    print(f"{'figure':<52} {'value':>8}")
    print(f"{'spread: slowest / fastest meter (target <= 1.2)':<52} {max(means.values()) / min(means.values()):>8.3f}")
    print(f"{'mean period the meters got (s)':<52} {mean:>8.3f}")
    if achieved is not None:
        print(f"{'achieved period shown by the API (s)':<52} {achieved:>8.3f}")
        print(f"{'  x the mean period the meters got':<52} {achieved / mean:>8.3f}")
    if needed is not None:
        print(f"{'period the read plans need (check-config) (s)':<52} {needed:>8.3f}")
        print(f"{'  mean period got / needed':<52} {mean / needed:>8.3f}")
    print(f"{'polls that missed their slot (counted)':<52} {lstat.cycle_overruns:>8d}")
    print(f"{'line warnings logged (target: 2, one each way)':<52} {len(warnings):>8d}  {', '.join(warnings)}")
    print(f"{'t3.5 violations on the wire':<52} {wire.gap_violations:>8d}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured (20)")
    args = parser.parse_args(argv)
    return asyncio.run(run(args.window))


if __name__ == "__main__":
    sys.exit(main())
