"""Timing of a half-duplex RS-485 wire, for simulations that must be slow like the real thing.

A pseudo-terminal moves bytes instantly whatever baud rate it is told, so a
simulated line that wants real timing has to impose it: each frame occupies
the wire for len × Tc, only one frame is on the wire at a time (half duplex),
and a frame may not start until the wire has been silent for t3.5 after the
previous one (Modbus over Serial Line v1.02 §2.5.1.1).

Pure bookkeeping on monotonic timestamps; the simulated line does the waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.acquisition.read_plan import WireCost


@dataclass
class Wire:
    cost: WireCost
    idle_from: float = float("-inf")
    """When the last frame's last byte left the wire."""
    busy_s: float = 0.0
    frames: int = 0
    gap_violations: int = 0
    """Frames offered before the t3.5 silence had passed (delayed, and counted)."""

    def transmit(self, offered_at: float, nbytes: int) -> tuple[float, float]:
        """Place a frame offered at ``offered_at``; return (start, end) of its time on the wire.

        A frame offered too early waits for the silence, as a well-behaved
        master's UART would be made to; the violation is counted so a benchmark
        can show the master itself respected the gap.
        """
        earliest = self.idle_from + self.cost.t35()
        if offered_at < earliest:
            self.gap_violations += 1
        start = max(offered_at, earliest)
        end = start + nbytes * self.cost.char_time()
        self.idle_from = end
        self.busy_s += end - start
        self.frames += 1
        return start, end
