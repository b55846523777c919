"""Exact money arithmetic: the single rounding rule every bill and projection uses.

THE RULE. Each line item is computed exactly (``fractions.Fraction`` built from integer Wh and the
tariff's decimal strings, never floats), then rounded once to the currency's minor unit, half away
from zero ("half-up" for the positive amounts that make up nearly every bill; a credit of the same
magnitude rounds to the same number of cents with the opposite sign, so charge and credit cancel).
The bill total is the sum of the rounded line items, so a printed bill always adds up. Percentage
taxes are line items too: computed exactly on the sum of the rounded items before them, then rounded.

Rounding per line item (not once on the total) is what utilities print and what a customer can check
with a pencil: the seed bill's PSCR line is 850 kWh × $0.00125 = $1.0625 → $1.06.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction


def round_half_away(value: Fraction) -> int:
    """Round an exact amount to an integer, ties away from zero.

    Integer arithmetic on a ``Fraction`` so no decimal context (precision, traps) can change a bill.
    """
    magnitude = math.floor(abs(value) + Fraction(1, 2))
    return magnitude if value >= 0 else -magnitude


def fraction_to_str(value: Fraction) -> str:
    """Render an exact quantity for JSON without losing exactness.

    Terminating decimals (every kWh figure, since usage is integer Wh) print as plain decimals
    ("1.0625"); a proration such as 19/30 has no finite decimal form and prints as "19/30" rather
    than a rounded number that would no longer multiply out to the printed amount.
    """
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = value.numerator * 10**places // value.denominator  # exact: the denominator divides 10**places
    whole, frac = divmod(abs(scaled), 10**places)
    sign = "-" if scaled < 0 else ""
    digits = f"{frac:0{places}d}".rstrip("0") if places else ""
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def decimal_to_str(value: Decimal) -> str:
    """Print a rate as the tariff wrote it ("0.10" stays "0.10") but never in exponent notation."""
    return format(value, "f")


def format_minor(amount_minor: int, minor_units: int) -> str:
    """Show minor units as a major-unit string ("11506", 2 → "115.06") for labels and alerts."""
    sign = "-" if amount_minor < 0 else ""
    if minor_units == 0:
        return f"{sign}{abs(amount_minor)}"
    major, minor = divmod(abs(amount_minor), 10**minor_units)
    return f"{sign}{major}.{minor:0{minor_units}d}"
