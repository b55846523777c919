"""Helpers shared by the ledger and uplink benchmarks (not a benchmark itself)."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator
from pathlib import Path

from gateway.intervals import Reading

REPO = Path(__file__).resolve().parents[1]
GATEWAY_ID = "gw-bench"
T0_S = 1_767_225_600
"""2026-01-01T00:00:00Z, a 15-minute boundary: where every simulated meter starts."""


def meter_id(index: int) -> str:
    return f"m{index:04d}"


def register_wh(index: int, t_ms: int) -> int:
    """A meter's cumulative register at ``t_ms``: a steady load of 0.4 to 3.5 kW, different per meter.

    Exact integer arithmetic, non-decreasing in time, so every reading is accepted.
    """
    watts = 400 + (index * 7919) % 3100
    return 1_000_000 + index * 10_000 + (t_ms - T0_S * 1000) * watts // 3_600_000


def polled_readings(meters: int, period_s: int, cycles: int, *, spread_ms: int = 0,
                    first_cycle: int = 0) -> Iterator[Reading]:
    """Readings of ``meters`` meters polled every ``period_s``, in time order.

    Within a cycle, meter ``i`` is read ``i * spread_ms`` after the cycle starts, as a
    bus scheduler working through a line would; with ``spread_ms=0`` all are read on
    the cycle instant (on a 15-minute boundary every 900 s).
    """
    for cycle in range(first_cycle, first_cycle + cycles):
        base = (T0_S + cycle * period_s) * 1000
        for i in range(meters):
            t_ms = base + i * spread_ms
            yield Reading(meter_id(i), t_ms, register_wh(i, t_ms))


def proc_io() -> dict[str, int]:
    """This process's I/O counters (Linux ``/proc/self/io``, all threads included)."""
    with open("/proc/self/io", encoding="ascii") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f.read().splitlines() if line)}


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_kb() -> int:
    """Resident set size now, in KiB (``/proc/self/status`` VmRSS)."""
    return _status_kb("VmRSS")


def peak_rss_kb() -> int:
    """Peak resident set size of this process, in KiB (``/proc/self/status`` VmHWM).

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries that across ``execve`` from the
    address space the child was started from, so a child spawned by a parent that had
    just built a big ledger would report the parent's peak.
    """
    return _status_kb("VmHWM")


def ledger_bytes(data_dir: Path) -> int:
    """Size on disk of the ledger file and its write-ahead log."""
    return sum(p.stat().st_size for p in (data_dir / "ledger.db", data_dir / "ledger.db-wal") if p.exists())


def median(values: list[float]) -> float:
    return statistics.median(values)


def child_env() -> dict[str, str]:
    """Environment for a child Python process that must import the repo's packages."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env
