"""Whether values decoded with a profile look like that meter measured them (pure).

``read`` with the wrong profile still decodes *something*: a float read from
an integer register, a scale off by 1000, a word order reversed. Those values
are absurd in ways a technician spots only with experience (a 3e-41 V mains, a
power factor of 17), so ``read`` says so beside the numbers instead.
The bounds are generous on purpose: they catch a wrong map, not a bad grid.
"""

from __future__ import annotations

import math

from gateway.profiles import Profile

MAINS_V = (80.0, 500.0)
"""Line-to-neutral volts a live phase can show (100-277 V grids with wide margins); 0 is a dead phase."""
MAINS_HZ = (45.0, 65.0)
"""50 and 60 Hz grids with margin; 0 is accepted as "not measured yet"."""
MAX_REGISTER_WH = 1e12
"""A billion kWh: no direct or CT meter register gets there; a misdecoded 64-bit value does."""
HEADROOM = 1.5
"""Margin over a profile's rating before a value is called impossible (short overloads, rounding)."""


def implausible(profile: Profile, values: dict[str, float]) -> dict[str, str]:
    """quantity → why its value is not believable for this profile (empty when all look right)."""
    out: dict[str, str] = {}
    max_v = (profile.max_voltage_v or MAINS_V[1]) * HEADROOM
    max_a = profile.max_current_a * HEADROOM if profile.max_current_a else None
    rating = profile.ceiling_w
    max_w = rating * HEADROOM if rating else None
    for name, value in values.items():
        if not math.isfinite(value):
            out[name] = "not a number: the register holds something else"
        elif name.startswith("voltage_") and value != 0 and not MAINS_V[0] <= value <= max_v:
            out[name] = f"{value:g} V is no mains voltage (expected 0 or {MAINS_V[0]:g}-{max_v:g} V)"
        elif name == "frequency" and value != 0 and not MAINS_HZ[0] <= value <= MAINS_HZ[1]:
            out[name] = f"{value:g} Hz is no grid frequency (expected {MAINS_HZ[0]:g}-{MAINS_HZ[1]:g} Hz)"
        elif name.startswith("current_") and max_a is not None and abs(value) > max_a:
            out[name] = f"{value:g} A is beyond this meter's rating ({profile.max_current_a:g} A)"
        elif name.startswith("power_") and name != "power_factor" and max_w is not None and abs(value) > max_w:
            out[name] = f"{value:g} W is beyond this meter's rating ({rating:g} W)"
        elif name == "power_factor" and abs(value) > 1.0:
            out[name] = f"a power factor of {value:g} is impossible (|pf| <= 1)"
        elif name.startswith("energy_") and not 0 <= value <= MAX_REGISTER_WH:
            out[name] = f"{value:g} Wh is no energy register reading"
    return out
