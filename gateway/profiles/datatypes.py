"""Register data types as they appear in meter manuals.

The type name alone fixes how many 16-bit registers a value occupies, so a
profile never states a register count that could contradict its type.
"""

from __future__ import annotations

from enum import StrEnum


class DataType(StrEnum):
    """Wire representation of one value; the name implies its width."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"

    @property
    def bits(self) -> int:
        """Width in bits; derived from the name so the two can never disagree (once, in ``_BITS``: this
        is asked for every value read, and by the planner for every span)."""
        return _BITS[self]

    @property
    def register_count(self) -> int:
        """Number of 16-bit registers the value spans (16→1, 32→2, 64→4)."""
        return self.bits // 16

    @property
    def is_float(self) -> bool:
        return self.value.startswith("float")

    @property
    def is_signed(self) -> bool:
        return self.value.startswith("int") or self.is_float

    @property
    def struct_code(self) -> str:
        """`struct` format character for the whole value in big-endian byte order."""
        return _STRUCT_CODES[self]

    @property
    def int_range(self) -> tuple[int, int]:
        """Inclusive raw integer range; for floats, the range of the raw bit pattern."""
        if self.is_signed and not self.is_float:
            half = 1 << (self.bits - 1)
            return -half, half - 1
        return 0, (1 << self.bits) - 1


def register_count(datatype: DataType) -> int:
    """Function form of `DataType.register_count`, handy as a sort/map key."""
    return datatype.register_count


_BITS: dict[DataType, int] = {
    dt: int(dt.value.removeprefix("u").removeprefix("int").removeprefix("float")) for dt in DataType
}

_STRUCT_CODES: dict[DataType, str] = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}
