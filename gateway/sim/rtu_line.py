"""A simulated RS-485 line: several Modbus RTU slaves behind a pseudo-terminal.

The gateway opens the line by a path (a symlink to the pty's slave end, as
udev gives /dev/serial/by-id/... names), exactly as it would open a USB
adapter, and speaks real RTU frames to it. Each device can be told to fail the
ways field devices fail — stay silent, send garbage, answer with an exception,
answer late — and the whole line can vanish and come back (the symlink and
the pty go away, as when a USB adapter is unplugged and replugged).

With a :class:`~gateway.sim.wire.Wire` the line also takes the time a real
wire takes, which is what the bus-efficiency benchmark measures against.
The same devices can be served over TCP as a serial device server would
(RTU-over-TCP) with :class:`RtuTcpServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.acquisition import rtu
from gateway.clock import Clock
from gateway.sim.identity_regs import identity_words
from gateway.sim.modbus_sim import SimulatedMeter
from gateway.sim.wire import Wire

ILLEGAL_ADDRESS = 2

ON_TIME_S = 0.001
"""How early a simulated wire wakes before an answer's last byte leaves it (the loop's timer granularity)."""


@dataclass
class RtuDevice:
    """One slave on the line, with fault knobs a test can flip at any time."""

    unit: int
    registers: Callable[[int, int, int], list[int] | int]
    """(function, start, count) → registers, or an exception code."""
    mode: str = "ok"
    """"ok", "silent", "garbage", "exception", or "late"."""
    exception_code: int = 4
    late_s: float = 0.0
    turnaround_s: float = 0.0
    noise_prefix: bytes = b""
    """Bytes the line adds before each answer (a bus without bias resistors at driver turnaround)."""
    requests: int = 0

    def answer(self, req: rtu.Request, rng: random.Random) -> bytes | None:
        self.requests += 1
        if self.mode == "silent":
            return None
        if self.mode == "garbage":
            return bytes(rng.randrange(256) for _ in range(rng.randrange(3, 20)))
        if self.mode == "exception":
            return rtu.exception_response(self.unit, req.function, self.exception_code)
        result = self.registers(req.function, req.start, req.count)
        if isinstance(result, int):
            return rtu.exception_response(self.unit, req.function, result)
        return rtu.register_response(self.unit, req.function, result)


def meter_registers(meter: SimulatedMeter, clock: Clock,
                    identity: dict[str, int | str] | None = None) -> Callable[[int, int, int], list[int] | int]:
    """A register source answering a profile's map from a simulated meter's values.

    Identity registers answer ``identity[name]`` or the profile's expected value,
    else a serial number derived from the unit id, so scans can identify the model.
    Registers between known values read as 0, like most meters; a read that
    touches no known register gets exception 2, like most meters too.
    """
    profile = meter.profile

    def source(function: int, start: int, count: int) -> list[int] | int:
        if meter.refuses(function, start, count):
            return ILLEGAL_ADDRESS
        out = [0] * count
        known = False
        values = meter.values(clock.now())
        for name, q in profile.quantities.items():
            if q.function != function or q.end <= start or q.address >= start + count or name not in values:
                continue
            known = True
            for i, word in enumerate(meter.words(name, values[name])):
                if start <= q.address + i < start + count:
                    out[q.address + i - start] = word
        for ident in profile.identity:
            if ident.function != function or ident.address + ident.register_count <= start \
                    or ident.address >= start + count:
                continue
            known = True
            for i, word in enumerate(identity_words(ident, meter.unit_id, identity)):
                if start <= ident.address + i < start + count:
                    out[ident.address + i - start] = word
        if not known:
            return ILLEGAL_ADDRESS
        meter.reads += 1
        return out

    return source


class _Responder:
    """Frame assembly and answering, shared by the pty line and the TCP server."""

    def __init__(self, devices: list[RtuDevice], wire: Wire | None, seed: int) -> None:
        self.devices = devices
        self.wire = wire
        self._rng = random.Random(seed)
        self._buf = bytearray()
        self.requests_seen = 0

    def feed(self, data: bytes, send: Callable[[bytes], None]) -> None:
        self._buf += data
        now = time.monotonic()
        while len(self._buf) >= rtu.REQUEST_LEN:
            req = rtu.parse_request(bytes(self._buf[: rtu.REQUEST_LEN]))
            if req is None:
                del self._buf[0]  # resynchronise on the next byte, as a slave's frame timer would
                continue
            del self._buf[: rtu.REQUEST_LEN]
            self.requests_seen += 1
            self._dispatch(req, now, send)

    def _dispatch(self, req: rtu.Request, received: float, send: Callable[[bytes], None]) -> None:
        answers = [(d, d.answer(req, self._rng)) for d in self.devices if d.unit == req.unit]
        frames = [(d, a) for d, a in answers if a is not None]
        if not frames:
            return
        if len(frames) > 1:
            # Two slaves with one address talk over each other: the wire carries the OR of both.
            width = max(len(a) for _, a in frames)
            merged = bytearray(width)
            for _, a in frames:
                for i, b in enumerate(a):
                    merged[i] |= b
            frame = bytes(merged)
        else:
            frame = frames[0][1]
        device = frames[0][0]
        frame = device.noise_prefix + frame
        loop = asyncio.get_running_loop()
        delay = device.turnaround_s + (device.late_s if device.mode == "late" else 0.0)
        if self.wire is None:
            loop.call_later(delay, send, frame) if delay else send(frame)
            return
        # The request occupied the wire from when it was offered; the slave sees the frame end
        # after t3.5 of silence, thinks, then its answer occupies the wire in turn.
        _, req_end = self.wire.transmit(received, rtu.REQUEST_LEN)
        ready = req_end + self.wire.cost.t35() + delay
        _, resp_end = self.wire.transmit(ready, len(frame))
        # The loop's timers wake up to a millisecond late; a UART delivers the last byte as it ends. Wake a
        # millisecond early and sleep the rest in place, so the answer is not later than the wire makes it.
        loop.call_at(loop.time() + (resp_end - time.monotonic()) - ON_TIME_S, _deliver_at, resp_end, send, frame)


def _deliver_at(when: float, send: Callable[[bytes], None], frame: bytes) -> None:
    late = when - time.monotonic()
    if late > 0:
        time.sleep(late)
    send(frame)


class RtuLine:
    """Devices behind a pty; the gateway opens ``path``."""

    def __init__(self, devices: list[RtuDevice], path: Path, *, wire: Wire | None = None, seed: int = 1) -> None:
        self.path = path
        self.responder = _Responder(devices, wire, seed)
        self._master: int | None = None
        self._slave: int | None = None

    @property
    def devices(self) -> list[RtuDevice]:
        return self.responder.devices

    def start(self) -> None:
        """Create the pty and the symlink; call from inside the event loop."""
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline, before anybody opens it
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        tmp = self.path.with_name(self.path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.path)
        asyncio.get_running_loop().add_reader(master, self._readable)

    def _readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        self.responder.feed(data, self._send)

    def _send(self, frame: bytes) -> None:
        if self._master is None:
            return  # the line vanished while the answer was on its way
        with contextlib.suppress(OSError):
            os.write(self._master, frame)

    def inject(self, data: bytes) -> None:
        """Put bytes on the line that nobody asked for (noise, a second master)."""
        self._send(data)

    def vanish(self) -> None:
        """The USB adapter is unplugged: the node disappears and open handles get EIO."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._master is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            self._master = None
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None

    def stop(self) -> None:
        self.vanish()


class RtuTcpServer:
    """The same devices behind a TCP serial device server (RTU frames over TCP)."""

    def __init__(self, devices: list[RtuDevice], host: str = "127.0.0.1", port: int = 0, seed: int = 1) -> None:
        self.devices = devices
        self.host = host
        self.port = port
        self._seed = seed
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        responder = _Responder(self.devices, None, self._seed)
        self._writers.add(writer)

        def send(frame: bytes) -> None:
            if not writer.is_closing():
                writer.write(frame)

        try:
            while data := await reader.read(4096):
                responder.feed(data, send)
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class LineOfMeters:
    """Convenience: simulated meters on one line, by unit id."""

    meters: list[SimulatedMeter]
    clock: Clock
    devices: list[RtuDevice] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.devices = [RtuDevice(m.unit_id, meter_registers(m, self.clock)) for m in self.meters]

    def device(self, unit: int) -> RtuDevice:
        return next(d for d in self.devices if d.unit == unit)
