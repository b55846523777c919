"""Exact amounts: energy in whole Wh times a decimal rate, in integer stroops (never float).

A Stellar amount is an integer number of stroops, 10^-7 of a unit. The configured rate has at
most 7 decimal places (``check-config`` refuses more), so a rate is a whole number of stroops
per Wh and ``wh × rate`` is exact for every credit, positive or negative.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Final

STROOPS_PER_UNIT: Final = 10_000_000
DECIMALS: Final = 7
INT64_MAX: Final = 2**63 - 1


class AmountError(ValueError):
    """An amount that Stellar cannot represent exactly."""


def to_stroops(text: str | Decimal) -> int:
    """``"12.5"`` → 125000000. Refuses more than 7 decimal places instead of rounding."""
    try:
        value = Decimal(text.strip()) if isinstance(text, str) else text
    except InvalidOperation:
        raise AmountError(f"{text!r} is not a decimal amount") from None
    if not value.is_finite():
        raise AmountError(f"{text!r} is not a finite amount")
    scaled = value * STROOPS_PER_UNIT
    if scaled != scaled.to_integral_value():
        raise AmountError(f"{text!r} has more than {DECIMALS} decimal places")
    stroops = int(scaled)
    if abs(stroops) > INT64_MAX:
        raise AmountError(f"{text!r} is larger than a Stellar amount can be")
    return stroops


def format_amount(stroops: int) -> str:
    """125000000 → ``"12.5000000"`` (Horizon's spelling: always 7 decimals)."""
    sign = "-" if stroops < 0 else ""
    whole, frac = divmod(abs(stroops), STROOPS_PER_UNIT)
    return f"{sign}{whole}.{frac:07d}"


def rate_stroops(rate: str) -> int:
    """Stroops per Wh of a configured rate (asset units per Wh)."""
    stroops = to_stroops(rate)
    if stroops <= 0:
        raise AmountError(f"rate {rate!r} must be positive")
    return stroops


def wh_to_stroops(wh: int, per_wh: int) -> int:
    """The exact payment for ``wh`` (negative for a correction that takes energy back)."""
    return wh * per_wh
