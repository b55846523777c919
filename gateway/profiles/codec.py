"""Raw Modbus registers ↔ SI values, with the validity checks billing depends on.

Done with `struct` rather than pymodbus helpers so the same code serves the
daemon, simulators and tests, and so word order and sentinels are handled in
one place. Scaling uses the exact decimal ratio of `scale` (0.1 is 1/10, not
0.1000000000000000055…) so integer registers decode to the nearest float of
the true value: 2301 × 0.1 gives 230.1, not 230.10000000000002.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

from gateway.errors import ValueRejected
from gateway.profiles.datatypes import DataType
from gateway.profiles.models import IdentityRegister, Quantity


@lru_cache(maxsize=256)
def _ratio(scale: float) -> tuple[int, int]:
    # repr() is the shortest decimal that round-trips, i.e. what the profile author wrote.
    return Fraction(repr(scale)).as_integer_ratio()


def _join(registers: Sequence[int], word_order: str) -> bytes:
    for r in registers:
        if not 0 <= r <= 0xFFFF:
            raise ValueError(f"register value {r!r} is not a 16-bit word")
    words = reversed(registers) if word_order == "little" else registers
    return b"".join(w.to_bytes(2, "big") for w in words)


def _split(data: bytes, word_order: str) -> list[int]:
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return words[::-1] if word_order == "little" else words


def decode(q: Quantity, registers: Sequence[int]) -> float:
    """Turn the registers read for `q` into its SI value.

    Raises ValueRejected rather than returning a number for anything that must
    never reach the ledger: a wrong-length slice (reason "length"), a declared
    "not available" sentinel ("sentinel"), or a non-finite float ("nan").
    """
    if len(registers) != q.register_count:
        raise ValueRejected(
            f"{q.name}: expected {q.register_count} registers for {q.datatype.value}, got {len(registers)}",
            reason="length",
        )
    data = _join(registers, q.word_order)
    if q.invalid and int.from_bytes(data, "big") in q.invalid:
        raise ValueRejected(
            f"{q.name}: device reports the value as unavailable (raw 0x{data.hex()})", reason="sentinel"
        )
    (raw,) = struct.unpack(">" + q.datatype.struct_code, data)
    num, den = _ratio(q.scale)
    if isinstance(raw, int):
        # int / int true division is correctly rounded in Python.
        return float((raw * num) / den)
    if not math.isfinite(raw):
        raise ValueRejected(f"{q.name}: device sent {raw!r} (raw 0x{data.hex()})", reason="nan")
    value = raw * num / den
    if not math.isfinite(value):
        raise ValueRejected(f"{q.name}: {raw!r} × {q.scale} overflows", reason="nan")
    return float(value)


def encode(q: Quantity, value: float) -> list[int]:
    """Inverse of `decode`, for simulators and tests.

    Integer types round to the nearest raw step (half to even); a value that
    does not fit, is not finite, or would encode to a declared sentinel raises
    ValueError, because a simulator serving it would test the wrong thing.
    """
    if not math.isfinite(value):
        raise ValueError(f"{q.name}: cannot encode non-finite {value!r}")
    num, den = _ratio(q.scale)
    dt = q.datatype
    if dt.is_float:
        raw_f = value * den / num
        try:
            data = struct.pack(">" + dt.struct_code, raw_f)
        except OverflowError as exc:
            raise ValueError(f"{q.name}: {value!r} does not fit in {dt.value}") from exc
    else:
        raw_i = round(Fraction(value) * den / num)
        lo, hi = dt.int_range
        if not lo <= raw_i <= hi:
            raise ValueError(f"{q.name}: {value!r} → raw {raw_i} outside {dt.value} range {lo}..{hi}")
        data = struct.pack(">" + dt.struct_code, raw_i)
    if int.from_bytes(data, "big") in q.invalid:
        raise ValueError(f"{q.name}: {value!r} encodes to the sentinel 0x{data.hex()}")
    return _split(data, q.word_order)


def decode_identity(ident: IdentityRegister, registers: Sequence[int]) -> str | int:
    """Read an identity register as text (NUL/space padding stripped) or integer."""
    if len(registers) != ident.register_count:
        raise ValueRejected(
            f"{ident.name}: expected {ident.register_count} registers, got {len(registers)}", reason="length"
        )
    data = _join(registers, ident.word_order)
    if ident.datatype == "string":
        return data.decode("latin-1").strip("\x00 ")
    (raw,) = struct.unpack(">" + DataType(ident.datatype).struct_code, data)
    return int(raw)


def identity_matches(ident: IdentityRegister, registers: Sequence[int]) -> bool:
    """True when the registers are consistent with this profile's identity hint."""
    try:
        value = decode_identity(ident, registers)
    except ValueRejected:
        return False
    if ident.expect is None:
        return True
    if isinstance(value, str) and isinstance(ident.expect, str):
        return value.startswith(ident.expect.strip("\x00 "))
    return value == ident.expect
