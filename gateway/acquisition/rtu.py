"""Modbus RTU frames as bytes (pure): CRC, read requests, response parsing.

Kept free of I/O so the master, the simulated line and the tests share one
definition of a frame, and so a response can be checked byte by byte as it
trickles in: the master knows after three bytes how long the frame must be,
which is what lets it stop waiting at the last byte instead of at a timeout
or an extra t3.5 of silence.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

READ_FUNCTIONS = (3, 4)
EXCEPTION_FLAG = 0x80
REQUEST_LEN = 8
EXCEPTION_LEN = 5
MAX_FRAME_LEN = 256


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """Modbus CRC-16 (poly 0xA001, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ b) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def crc_ok(frame: bytes | bytearray) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def read_request(unit: int, function: int, start: int, count: int) -> bytes:
    if function not in READ_FUNCTIONS:
        raise ValueError(f"only read functions 3 and 4 are supported, not {function}")
    return with_crc(struct.pack(">BBHH", unit, function, start, count))


def response_len(count: int) -> int:
    """Length of a normal read response carrying ``count`` registers."""
    return 5 + 2 * count


@dataclass(frozen=True)
class Request:
    unit: int
    function: int
    start: int
    count: int


def parse_request(frame: bytes) -> Request | None:
    """A read request, or None for anything else (other functions, bad CRC)."""
    if len(frame) != REQUEST_LEN or not crc_ok(frame):
        return None
    unit, function, start, count = struct.unpack(">BBHH", frame[:6])
    if function not in READ_FUNCTIONS:
        return None
    return Request(unit, function, start, count)


def register_response(unit: int, function: int, registers: list[int]) -> bytes:
    data = b"".join(r.to_bytes(2, "big") for r in registers)
    return with_crc(bytes([unit, function, len(data)]) + data)


def exception_response(unit: int, function: int, code: int) -> bytes:
    return with_crc(bytes([unit, function | EXCEPTION_FLAG, code]))


class FrameProblem(Exception):
    """A response that is not the answer to our request (CRC, unit, function, length)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def expected_len(buf: bytes | bytearray, unit: int, function: int) -> int | None:
    """How long the frame starting at ``buf`` must be, once enough of it is here.

    None means "need more bytes". A first byte that is not our unit or a
    function byte that is neither ours nor our exception is garbage: raise at
    once rather than wait for a length that will never be right.
    """
    if len(buf) < 2:
        return None
    if buf[0] != unit:
        raise FrameProblem(f"response from unit {buf[0]} while waiting for unit {unit}", "wrong_unit")
    if buf[1] == function | EXCEPTION_FLAG:
        return EXCEPTION_LEN
    if buf[1] != function:
        raise FrameProblem(f"response function {buf[1]:#04x} to a function {function} request", "garbage")
    if len(buf) < 3:
        return None
    return 5 + buf[2]


def answer_start(buf: bytes | bytearray, unit: int, function: int) -> int | None:
    """Where our answer may begin in ``buf``: the first ``unit`` byte followed by our function or its
    exception (or by nothing yet). None if no byte of ``buf`` can start it."""
    for i, byte in enumerate(buf):
        if byte == unit and (i + 1 == len(buf) or buf[i + 1] in (function, function | EXCEPTION_FLAG)):
            return i
    return None


def stray_frame(buf: bytes | bytearray) -> int | None:
    """Classify bytes that are not the answer we wait for.

    Returns the length of a complete, CRC-valid read response (of any unit) at
    the start of ``buf`` — a late answer to an earlier request, safe to drop —
    0 if ``buf`` may still become one, and None if it is garbage.
    """
    if len(buf) < 2:
        return 0
    if not 1 <= buf[0] <= 247 or (buf[1] & ~EXCEPTION_FLAG) not in READ_FUNCTIONS:
        return None
    if buf[1] & EXCEPTION_FLAG:
        n = EXCEPTION_LEN
    elif len(buf) < 3:
        return 0
    elif buf[2] % 2 or buf[2] > 250:
        return None
    else:
        n = 5 + buf[2]
    if len(buf) < n:
        return 0
    return n if crc_ok(buf[:n]) else None


@dataclass(frozen=True)
class Response:
    registers: list[int] | None
    exception_code: int | None = None


def parse_response(frame: bytes | bytearray, unit: int, function: int, count: int) -> Response:
    """Check a complete frame against the request it answers."""
    if not crc_ok(frame):
        raise FrameProblem(f"CRC error in a {len(frame)}-byte response from unit {unit}", "crc")
    if frame[1] == function | EXCEPTION_FLAG:
        return Response(None, frame[2])
    byte_count = frame[2]
    if byte_count != 2 * count or len(frame) != response_len(count):
        raise FrameProblem(f"unit {unit} returned {byte_count} data bytes for {count} registers", "length")
    data = bytes(frame[3:-2])
    return Response([int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)])
