"""What a simulated meter answers at its profile's identity registers.

The expected value where the profile gives one (ABB's type text, Eastron's
meter code), else a serial number derived from the unit id, so a scan of a
simulated line identifies each model exactly as it would a real one.
"""

from __future__ import annotations

from gateway.profiles import DataType, IdentityRegister

SERIAL_BASE = 4_000_000
"""Simulated serial numbers are this plus the unit id: distinct per id, stable across runs."""


def identity_words(ident: IdentityRegister, unit: int, given: dict[str, int | str] | None = None) -> list[int]:
    """The registers ``ident`` reads as: ``given[name]``, the profile's expected value, or a serial."""
    value: int | str = (given or {}).get(ident.name, ident.expect if ident.expect is not None else SERIAL_BASE + unit)
    if ident.datatype == "string":
        data = str(value).encode("latin-1").ljust(2 * ident.register_count, b" ")[: 2 * ident.register_count]
    else:
        dt = DataType(ident.datatype)
        data = int(value).to_bytes(2 * dt.register_count, "big", signed=dt.is_signed)
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return words[::-1] if ident.word_order == "little" else words
