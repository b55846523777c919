"""What a meter could have measured: the ceiling on register rises (pure).

A meter can only count energy as fast as its rated current at its highest
voltage allows. A register that rises faster than that over the time since the
last reading did not measure it: it misread, or a bridge published garbage. The
engine holds such a reading as suspect, exactly like an unexplained fall, so no
reading can ever credit more than ``ceiling × elapsed time``.

Every reading the ledger takes has a ceiling: from the meter's configuration,
its profile (``max_power_w``, or rated current × voltage × phases), or
:data:`DEFAULT_MAX_POWER_W` (see :mod:`gateway.config.ceiling`, which
``check-config`` shows per meter).
"""

from __future__ import annotations

from itertools import pairwise

DEFAULT_MAX_POWER_W = 100_000.0
"""The ceiling for a meter nobody gave one (an MQTT meter, a CT-connected profile): three phases of
120 A at 277 V (230 V + 20 %), the most any whole-current (direct-connected) meter carries. A
CT-connected meter can measure more: configure its ``max_power_w`` (CT primary x voltage x phases)."""

ROUNDING_SLACK_WH = 1
"""Registers are whole Wh: two readings rounded the other way can differ by one more than measured."""

MS_PER_HOUR = 3_600_000


def ceiling_wh(max_power_w: float, elapsed_ms: int) -> float:
    """The most a meter with this ceiling can count in ``elapsed_ms``."""
    return max_power_w * elapsed_ms / MS_PER_HOUR


def plausible_rise(t0: int, raw0: int, t1: int, raw1: int, max_power_w: float | None) -> bool:
    """Could the register have gone from ``raw0`` at ``t0`` to ``raw1`` at ``t1`` (ms, Wh)?

    Without a ceiling (``None``) any rise is plausible; the ledger never feeds such a reading.
    """
    if raw1 < raw0:
        return False
    return max_power_w is None or raw1 - raw0 <= ceiling_wh(max_power_w, t1 - t0) + ROUNDING_SLACK_WH


def consistent(series: tuple[tuple[int, int], ...], max_power_w: float | None) -> bool:
    """Do these (t_ms, raw) readings form a believable series of their own?"""
    return all(plausible_rise(t0, r0, t1, r1, max_power_w) for (t0, r0), (t1, r1) in pairwise(series))
