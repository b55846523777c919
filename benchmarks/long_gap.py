"""One reading after a long outage: fill cost, event-loop stall and memory, against a month's gap.

One command: ``.venv/bin/python benchmarks/long_gap.py`` (``--days`` for the long gap; about 30 s)

Measured: ``Ledger.commit_readings`` with one reading that arrives ``--days`` after the meter's last
one, so one commit signs, chains and writes every quarter-hour of the gap (substituted, S17). While
it runs, another task on the loop wakes every millisecond and records the longest wait it saw: the
event-loop stall a bus, the web page or an uplink would feel. Peak Python memory is traced with
``tracemalloc`` in a separate run (it slows the code down, so timings come from untraced runs).

Baseline, measured in the same run: the same for a 30-day gap (2880 intervals). Printed as ratios:
fill cost per interval (long / month: about 1 means the cost is linear, nothing worse), stall
(about 1: bounded by the slice size, not the gap) and peak memory (about 1: flat, however long).
Before the fix one reading built all its intervals at once: a 365-day gap stalled the loop 7.9 s
(30 days: 0.55 s) with 45.7 MiB traced (30 days: 4.0); a gap back to 1970 about 100 s and GiBs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without the editable install too

from stellar_sdk import Keypair

from gateway.intervals import Reading
from gateway.ledger.store import Ledger

T0 = 1_767_225_600_000
DAY_MS = 86_400_000
TICK_S = 0.001


async def _fill(days: float, *, traced: bool) -> tuple[float, float, float, int]:
    """(seconds per interval, longest loop stall in s, peak traced MiB, intervals) for one gap."""
    with tempfile.TemporaryDirectory() as tmp:
        ledger = await Ledger.open(Path(tmp), gateway_id="bench", keypair=Keypair.random())
        try:
            await ledger.commit_readings([Reading("m", T0, 1_000)], now_ms=T0)
            stall = 0.0
            done = False

            async def other_task() -> None:
                nonlocal stall
                last = time.perf_counter()
                while not done:
                    await asyncio.sleep(TICK_S)
                    now = time.perf_counter()
                    stall, last = max(stall, now - last), now

            task = asyncio.create_task(other_task())
            await asyncio.sleep(0.01)
            if traced:
                tracemalloc.start()
            end = T0 + round(days * DAY_MS)
            started = time.perf_counter()
            result = await ledger.commit_readings([Reading("m", end, 1_000 + round(days * 24_000))], now_ms=end)
            elapsed = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1] / 2**20 if traced else 0.0
            tracemalloc.stop()
            done = True
            await task
            n = result.credits_created
            return elapsed / n, stall, peak, n
        finally:
            await ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--days", type=float, default=365.0, help="length of the long gap (default 365)")
    parser.add_argument("--baseline-days", type=float, default=30.0, help="length of the baseline gap (default 30)")
    args = parser.parse_args()
    import logging

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    base_cost, base_stall, _, base_n = asyncio.run(_fill(args.baseline_days, traced=False))
    long_cost, long_stall, _, long_n = asyncio.run(_fill(args.days, traced=False))
    _, _, base_peak, _ = asyncio.run(_fill(args.baseline_days, traced=True))
    _, _, long_peak, _ = asyncio.run(_fill(args.days, traced=True))
    print(f"long_gap: one reading after {args.days:g} days ({long_n} intervals) "
          f"vs after {args.baseline_days:g} days ({base_n})")
    print(f"  fill cost per interval  {long_cost * 1e3:.3f} ms vs {base_cost * 1e3:.3f} ms  "
          f"ratio {long_cost / base_cost:.2f}")
    print(f"  longest loop stall      {long_stall * 1e3:.0f} ms vs {base_stall * 1e3:.0f} ms  "
          f"ratio {long_stall / base_stall:.2f}")
    print(f"  peak traced memory      {long_peak:.2f} MiB vs {base_peak:.2f} MiB  ratio {long_peak / base_peak:.2f}")


if __name__ == "__main__":
    main()
