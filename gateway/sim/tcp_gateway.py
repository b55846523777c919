"""Simulated meters behind a Modbus TCP gateway: MBAP framing, answers only for hosted ids.

A real Modbus TCP-to-RTU gateway answers exception 0x0B ("gateway target
device failed to respond") for an id nobody on its line answers; pymodbus'
test server instead says 0x04 ("device failure"), which makes every id look
alive to a scan. This server behaves like the gateway, so practising
commissioning against it teaches what the field will show.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable

MBAP = struct.Struct(">HHHB")
"""Transaction id, protocol id (0), length of what follows (unit id + PDU), unit id."""
MAX_PDU = 253
ILLEGAL_FUNCTION, ILLEGAL_VALUE, GATEWAY_TARGET_FAILED = 0x01, 0x03, 0x0B
MAX_READ = 125
STOP_WAIT_S = 2.0
"""How long a stop waits for open connections' handlers to see their socket closed (milliseconds, normally)."""

Source = Callable[[int, int, int], "list[int] | int"]
"""(function, start, count) → registers or an exception code: see :func:`gateway.sim.rtu_line.meter_registers`."""


def answer_pdu(sources: dict[int, Source], unit: int, pdu: bytes) -> bytes:
    """The response PDU for one request PDU to ``unit`` (pure)."""
    function = pdu[0] if pdu else 0
    if unit not in sources:
        return bytes([function | 0x80, GATEWAY_TARGET_FAILED])
    if function not in (3, 4) or len(pdu) != 5:
        return bytes([function | 0x80, ILLEGAL_FUNCTION])
    start, count = struct.unpack(">HH", pdu[1:5])
    if not 1 <= count <= MAX_READ or start + count > 0x10000:
        return bytes([function | 0x80, ILLEGAL_VALUE])
    result = sources[unit](function, start, count)
    if isinstance(result, int):
        return bytes([function | 0x80, result])
    return bytes([function, 2 * count]) + b"".join(struct.pack(">H", w & 0xFFFF) for w in result)


class ModbusTcpGateway:
    """A Modbus TCP endpoint for simulated meters, one source per hosted unit id."""

    def __init__(self, sources: dict[int, Source], host: str = "127.0.0.1", port: int = 0) -> None:
        self.sources = sources
        self.host = host
        self.port = port
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if (me := asyncio.current_task()) is not None:
            self._handlers.add(me)
        try:
            while True:
                tid, protocol, length, unit = MBAP.unpack(await reader.readexactly(MBAP.size))
                if protocol != 0 or not 2 <= length <= MAX_PDU + 1:
                    break  # not Modbus TCP: drop the connection, as devices do
                pdu = await reader.readexactly(length - 1)
                self.requests += 1
                response = answer_pdu(self.sources, unit, pdu)
                writer.write(MBAP.pack(tid, 0, len(response) + 1, unit) + response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        for writer in list(self._writers):
            writer.close()
        if self._handlers:  # closed connections end their handlers; a stop leaves none running
            await asyncio.wait(self._handlers, timeout=STOP_WAIT_S)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
