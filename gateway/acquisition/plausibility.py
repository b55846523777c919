"""Is a new register reading believable after the last one? (pure)

A register that goes backwards, or rises faster than the meter could ever measure, is a misread, a
reset or another device answering at that address: never energy to credit. An unsigned integer
register that wraps around its width is the one way down that is real, and the interval engine counts
through it.
"""

from __future__ import annotations

from gateway.intervals import Reading
from gateway.profiles import Quantity


def modulus_wh(quantity: Quantity | None) -> int | None:
    """Where an unsigned integer energy register wraps, in Wh; floats and signed types do not wrap."""
    if quantity is None or quantity.datatype.is_signed:
        return None
    modulus: float = 2 ** quantity.datatype.bits * float(quantity.scale)
    return round(modulus)


def _wrapped(last: Reading, new: Reading) -> bool:
    modulus = new.register_modulus_wh
    return bool(modulus) and 0 <= new.register_wh + (modulus or 0) - last.register_wh <= (modulus or 0) // 10


def implausible(last: Reading | None, new: Reading, max_power_w: float | None) -> tuple[str, str] | None:
    if last is None:
        return None
    delta = new.register_wh - last.register_wh
    if delta < 0 and _wrapped(last, new):
        delta += new.register_modulus_wh or 0  # a counter rollover: the engine counts through it
    if delta < 0:
        return "backwards", f"register went from {last.register_wh} Wh to {new.register_wh} Wh"
    if max_power_w and new.t_ms > last.t_ms:
        hours = (new.t_ms - last.t_ms) / 3_600_000
        if delta > max_power_w * hours + 1:
            return "jump", (f"{delta} Wh in {hours * 3600:.0f} s exceeds the meter's {max_power_w:.0f} W maximum")
    return None
