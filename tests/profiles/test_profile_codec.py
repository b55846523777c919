"""Decoding rules that billing correctness rests on: word order, scale, rejection."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import ValueRejected
from gateway.profiles import DataType, Quantity, decode, encode


def q(
    datatype: str, *, word_order: str = "big", scale: float = 1.0, invalid: tuple[int, ...] = ()
) -> Quantity:
    return Quantity.model_validate(
        {
            "name": "x",
            "address": 0,
            "function": 3,
            "datatype": datatype,
            "word_order": word_order,
            "scale": scale,
            "unit": "",
            "invalid": list(invalid),
        }
    )


def test_register_counts_follow_type_width() -> None:
    assert [t.register_count for t in DataType] == [1, 1, 2, 2, 4, 4, 2, 4]


def test_big_word_order_is_high_word_first() -> None:
    assert decode(q("uint32"), [0x0001, 0x0002]) == 0x0001_0002


def test_little_word_order_is_low_word_first() -> None:
    # Carlo Gavazzi style: 0x0001_0002 travels as [0x0002, 0x0001].
    assert decode(q("uint32", word_order="little"), [0x0002, 0x0001]) == 0x0001_0002
    assert decode(q("int32", word_order="little"), [0xFFFE, 0xFFFF]) == -2
    regs = [0x0004, 0x0003, 0x0002, 0x0001]
    assert decode(q("uint64", word_order="little"), regs) == 0x0001_0002_0003_0004


def test_float32_big_endian() -> None:
    hi, lo = struct.unpack(">2H", struct.pack(">f", 1234.5))
    assert decode(q("float32", scale=1000), [hi, lo]) == 1_234_500.0


def test_signed_types() -> None:
    assert decode(q("int16"), [0xFFFF]) == -1
    assert decode(q("uint16"), [0xFFFF]) == 65535
    assert decode(q("int64"), [0xFFFF] * 4) == -1


def test_divisor_scales_are_exact() -> None:
    # 2301 × 0.1 in binary floating point is 230.10000000000002.
    assert decode(q("uint32", scale=0.1), [0, 2301]) == 230.1
    assert decode(q("int16", scale=0.001), [0xFC18]) == -1.0
    # ABB: uint64 in 0.01 kWh → scale 10 Wh.
    assert decode(q("uint64", scale=10), [0, 0, 0x0001, 0xE240]) == 1_234_560.0


def test_sentinel_rejected_after_word_order() -> None:
    quantity = q("uint32", word_order="little", invalid=(0xFFFF_0000,))
    with pytest.raises(ValueRejected) as info:
        decode(quantity, [0x0000, 0xFFFF])
    assert info.value.reason == "sentinel"
    assert decode(quantity, [0xFFFF, 0x0000]) == 0x0000_FFFF


def test_signed_sentinel_may_be_written_negative() -> None:
    quantity = q("int32", invalid=(-1, 0x7FFF_FFFF))
    assert quantity.invalid == (0x7FFF_FFFF, 0xFFFF_FFFF)
    for regs in ([0xFFFF, 0xFFFF], [0x7FFF, 0xFFFF]):
        with pytest.raises(ValueRejected) as info:
            decode(quantity, regs)
        assert info.value.reason == "sentinel"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(("dt", "fmt"), [("float32", ">f"), ("float64", ">d")])
def test_non_finite_float_rejected(value: float, dt: str, fmt: str) -> None:
    raw = struct.pack(fmt, value)
    regs = list(struct.unpack(f">{len(raw) // 2}H", raw))
    with pytest.raises(ValueRejected) as info:
        decode(q(dt), regs)
    assert info.value.reason == "nan"


def test_float_overflow_after_scaling_rejected() -> None:
    regs = list(struct.unpack(">4H", struct.pack(">d", 1e308)))
    with pytest.raises(ValueRejected) as info:
        decode(q("float64", scale=1000), regs)
    assert info.value.reason == "nan"


@pytest.mark.parametrize("regs", [[], [1], [1, 2, 3]])
def test_wrong_length_rejected(regs: list[int]) -> None:
    with pytest.raises(ValueRejected) as info:
        decode(q("float32"), regs)
    assert info.value.reason == "length"


def test_out_of_range_word_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="16-bit"):
        decode(q("uint16"), [0x10000])


def test_encode_refuses_unrepresentable_values() -> None:
    with pytest.raises(ValueError, match="range"):
        encode(q("uint16"), -1.0)
    with pytest.raises(ValueError, match="float32"):
        encode(q("float32"), 1e39)
    with pytest.raises(ValueError, match="non-finite"):
        encode(q("float32"), math.nan)
    with pytest.raises(ValueError, match="sentinel"):
        encode(q("uint16", invalid=(0xFFFF,)), 65535.0)


_INT_TYPES = ["int16", "uint16", "int32", "uint32", "int64", "uint64"]
_SCALES = [1.0, 10.0, 1000.0, 0.1, 0.01, 0.001, -1.0]


@given(
    dt=st.sampled_from(_INT_TYPES),
    word_order=st.sampled_from(["big", "little"]),
    scale=st.sampled_from(_SCALES),
    data=st.data(),
)
def test_integer_round_trip_is_exact_in_raw_steps(
    dt: str, word_order: str, scale: float, data: st.DataObject
) -> None:
    quantity = q(dt, word_order=word_order, scale=scale)
    lo, hi = DataType(dt).int_range
    # Keep raw values where float64 holds every integer, as real counters do.
    raw = data.draw(st.integers(max(lo, -(2**52)), min(hi, 2**52)))
    regs = encode(quantity, decode(quantity, encode(quantity, raw * scale)))
    assert len(regs) == quantity.register_count
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert decode(quantity, regs) == decode(quantity, encode(quantity, raw * scale))
    assert math.isclose(decode(quantity, regs), raw * scale, rel_tol=1e-12, abs_tol=abs(scale) / 2)


@given(
    dt=st.sampled_from(["float32", "float64"]),
    word_order=st.sampled_from(["big", "little"]),
    scale=st.sampled_from(_SCALES),
    value=st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
)
def test_float_round_trip_within_type_precision(dt: str, word_order: str, scale: float, value: float) -> None:
    quantity = q(dt, word_order=word_order, scale=scale)
    decoded = decode(quantity, encode(quantity, value))
    rel = 2**-23 if dt == "float32" else 2**-51
    assert math.isclose(decoded, value, rel_tol=rel, abs_tol=1e-30)
    # A value that came off the wire survives a second trip bit for bit.
    assert decode(quantity, encode(quantity, decoded)) == decoded
