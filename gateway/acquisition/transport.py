"""One Modbus read transaction on one line, for three kinds of line.

* :class:`RtuTransport` over a serial port (pyserial opens and configures the
  device; bytes are read by the event loop) or over a TCP socket to a serial
  device server (RTU-over-TCP): same frames, same timing rules.
* :class:`ModbusTcpTransport`: Modbus TCP through pymodbus's client.

A transport does one attempt and sorts what went wrong by what the caller
should do: :class:`DeviceTimeout` / :class:`FrameError` (that device, retry),
:class:`DeviceException` (the device answered; do not retry), and
:class:`PortUnavailable` (the whole line is gone; reopen later, do not blame the
device). Retries and backoff live one layer up, in the bus scheduler.

Why the RTU master is written here instead of using pymodbus's serial client:
it must enforce the t3.5 silence and configurable gaps before every frame
(pymodbus does not), throw away whatever is on the line before a request
(garbage, a late answer to the previous request) so it can never be taken for
this answer, stop reading at the exact last byte of the expected frame, and
notice a vanished USB adapter as a line fault rather than as timeouts of every
meter on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import time
from typing import TYPE_CHECKING, Protocol

import serial
import structlog

from gateway.acquisition import rtu
from gateway.acquisition.portlock import PortBusy, PortLock, endpoint_key
from gateway.acquisition.read_plan import WireCost
from gateway.config import BusConfig
from gateway.errors import AcquisitionError, DeviceException, DeviceTimeout

if TYPE_CHECKING:  # pymodbus is imported by a Modbus TCP bus only: RTU lines never load it
    from pymodbus.client import AsyncModbusTcpClient

log = structlog.get_logger("gateway.transport")

CONNECT_TIMEOUT_S = 3.0
"""Host seconds to open a TCP connection to a device server; a LAN peer answers in
milliseconds, and a longer wait would stall every meter on the line."""

LEADING_NOISE_MAX = 4
"""Noise bytes skipped in front of an answer; more than that is a garbled answer, not noise."""

GATEWAY_NO_RESPONSE = (0x0A, 0x0B)
"""Exception codes a Modbus TCP gateway sends for an absent serial device: a
timeout in disguise, not an answer from the meter."""

PRECISE_WAIT_S = 0.001
"""The event loop's timers wake on whole milliseconds (epoll), up to 1 ms after they are due: on a
9600-baud line that is a quarter of the 3.6 ms frame gap, lost on every transaction. A frame gap is
therefore waited for in the loop until this close to its end, and the rest in place: never longer
than needed, never a busy loop, and the loop held for at most this long per transaction."""

ALONE_HOLD_MAX_S = 0.005
"""...except on the only RTU line of the process, where a frame gap up to this long (t3.5 is 3.6 ms at
9600 baud) is waited for in place, all of it. A wake-up of the event loop costs a Raspberry-class box (and
the shared harness's VM) about 0.1-0.2 ms of CPU, against well under 0.1 ms for a plain sleep, and the
gap is one of the two wake-ups of every transaction: holding it in place takes about a sixth off the
daemon's CPU on a busy line. Nothing else in the loop is timed to the millisecond then (the web page, the
writer and the uplinks wait at most that long), whereas a second line's own frame gaps would be."""


class FrameError(AcquisitionError):
    """Bytes arrived but were not a valid answer: CRC error, garbage, wrong unit, truncated."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class PortUnavailable(AcquisitionError):
    """The line itself is gone (serial device node missing, connection refused/lost)."""


class Transport(Protocol):
    endpoint: str
    noise_bytes: int

    async def transact(self, unit: int, function: int, start: int, count: int, *,
                       turnaround_s: float = 0.0) -> list[int]:
        """Read ``count`` registers; one attempt."""
        ...

    def close(self) -> None: ...


def wire_cost(bus: BusConfig, turnaround_s: float = 0.0) -> WireCost:
    return WireCost.for_line(bus.framing, bus.baud, turnaround_s)


class _Link:
    """A byte pipe with an inbox; subclasses feed it from a fd or a socket."""

    def __init__(self) -> None:
        self.inbox = bytearray()
        self.last_rx = 0.0
        """time.monotonic() of the last byte received: the start of the current silence."""
        self.broken: str | None = None
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _received(self, data: bytes) -> None:
        self.inbox += data
        self.last_rx = time.monotonic()
        self._wake()

    def _lost(self, why: str) -> None:
        self.broken = why
        self._wake()

    async def wait_data(self, within_s: float) -> None:
        """Return when bytes arrive or the link breaks, or after ``within_s`` host seconds.

        A bare future and one timer: this runs once or twice per transaction, and an Event with an
        ``asyncio.timeout`` around it cost several times as much for the same wait.
        """
        if within_s <= 0:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(within_s, self._wake)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def take_pending(self) -> bool:
        """Read now what came while the loop was held (a frame gap waited in place); True if anything did."""
        return False

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SerialLink(_Link):
    def __init__(self, port: serial.Serial) -> None:
        super().__init__()
        self._port = port
        self._fd: int = port.fileno()
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO is what a read gives when the USB adapter (or the pty's other end) went away.
            self._detach()
            self._lost(f"read failed: {exc.strerror or exc}")
            return
        if not data:
            self._detach()
            self._lost("end of file on the serial device")
            return
        self._received(data)

    def take_pending(self) -> bool:
        # A line held alone sleeps its whole gap in place: noise or a stray answer in those milliseconds
        # must restart the silence before the request goes out, as it would if the loop had seen it.
        # Asked first, not just read: with pyserial's VMIN=0/VTIME=0 an empty line reads as end of file.
        before = len(self.inbox)
        if self.broken is None and self._poll.poll(0):
            self._readable()
        return len(self.inbox) > before

    def _detach(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._fd)

    def write(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)
        except OSError as exc:
            self._lost(f"write failed: {exc.strerror or exc}")
            raise PortUnavailable(f"cannot write to {self._port.port}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        self._detach()
        with contextlib.suppress(Exception):
            self._port.close()


class _TcpLinkProtocol(asyncio.Protocol):
    def __init__(self, link: _TcpLink) -> None:
        self._link = link

    def data_received(self, data: bytes) -> None:
        self._link._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._link._lost(f"connection lost: {exc}" if exc else "connection closed by peer")


class _TcpLink(_Link):
    transport: asyncio.Transport | None = None

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise PortUnavailable("connection to the device server is closed")
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class RtuTransport:
    """Modbus RTU master on a serial port or a raw TCP byte stream."""

    _open_links: set[RtuTransport] = set()  # noqa: RUF012 - shared on purpose: the RTU lines open in this process
    """RTU transports of this process with an open link: with one, its frame gaps are held in place."""

    def __init__(self, bus: BusConfig) -> None:
        self.cfg = bus
        self.cost = wire_cost(bus)
        self.endpoint: str = (bus.device or "") if bus.kind == "rtu" else f"{bus.host}:{bus.port or 502}"
        self._link: _Link | None = None
        self._quiet_from = 0.0
        """time.monotonic() after which the line has been silent (end of our last frame or last byte seen)."""
        self._last_unit: int | None = None
        self._still_arriving = 0
        """Bytes of a frame given up on (truncated) that may still be on their way."""
        self.noise_bytes = 0
        """Bytes found on the line that nobody asked for (noise, late answers)."""
        self.gaps_timed = 0
        self.gap_late_s = 0.0
        """Total time requests went out after their gap had ended, or after they were asked for if that
        was later (``gaps_timed`` of them): how precisely the gap is timed, as a benchmark reports it."""
        self._device_lock_owner: str | None = None
        self._held_key: str | None = None
        self._device_lock: PortLock | None = None

    def lock_device_on_open(self, owner: str, held_key: str) -> None:
        """Also lock the device node a serial port resolves to, each time it is opened.

        The bus locks its line under the configured path at start. When the adapter is unplugged at that
        moment, /dev/serial/by-id/... does not resolve, so that lock is not under the /dev/ttyUSBn name a
        technician may type into ``scan`` later. Locking the resolved node while it is open closes that gap
        (and a node a commissioning tool already holds is reported as such, then retried like any outage).
        """
        self._device_lock_owner = owner
        self._held_key = held_key

    def _lock_device(self) -> None:
        if self._device_lock_owner is None or self.cfg.device is None or self._device_lock is not None:
            return
        key = endpoint_key(device=os.path.realpath(self.cfg.device))
        if key == self._held_key:
            return  # resolved when the bus started: its own lock already covers this node
        lock = PortLock(key, owner=self._device_lock_owner)
        try:
            lock.acquire()
        except PortBusy as exc:
            raise PortUnavailable(f"{self.cfg.device} is in use: {exc}") from None
        self._device_lock = lock

    def _unlock_device(self) -> None:
        if self._device_lock is not None:
            self._device_lock.release()
            self._device_lock = None

    @property
    def gap_s(self) -> float:
        """Silence before every request: t3.5 at least, or the configured (longer) gap."""
        return max(self.cost.t35(), self.cfg.inter_frame_gap_s or 0.0)

    async def _open(self) -> _Link:
        if self._link is not None and self._link.broken is None:
            return self._link
        if self._link is not None:
            log.warning("line_lost", endpoint=self.endpoint, why=self._link.broken)
            self.close()
        if self.cfg.kind == "rtu":
            assert self.cfg.device is not None
            self._lock_device()
            try:
                port = serial.Serial(
                    port=self.cfg.device, baudrate=self.cfg.baud, bytesize=8, parity=self.cfg.framing[1],
                    stopbits=int(self.cfg.framing[2]), timeout=0, exclusive=True,
                )
            except (serial.SerialException, OSError, ValueError) as exc:
                self._unlock_device()
                raise PortUnavailable(f"cannot open {self.cfg.device}: {exc}") from exc
            link: _Link = _SerialLink(port)
        else:
            tcp = _TcpLink()
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    transport, _ = await loop.create_connection(
                        lambda: _TcpLinkProtocol(tcp), self.cfg.host or "", self.cfg.port or 502)
            except (OSError, TimeoutError) as exc:
                raise PortUnavailable(f"cannot connect to {self.endpoint}: {exc}") from exc
            tcp.transport = transport
            link = tcp
        self._link = link
        RtuTransport._open_links.add(self)
        self._quiet_from = time.monotonic()
        log.info("line_opened", endpoint=self.endpoint)
        return link

    def _discard(self, link: _Link) -> None:
        if link.inbox:
            self.noise_bytes += len(link.inbox)
            link.inbox.clear()

    async def _await_silence(self, link: _Link, unit: int) -> None:
        """Hold the request until the line has been quiet for the gap (and the switch delay), timed from
        the end of the last byte on the line, and not a moment longer."""
        gap = self.gap_s
        if self._last_unit is not None and unit != self._last_unit:
            gap = max(gap, self.cfg.device_switch_delay_s)
        asked = time.monotonic()
        precise = ALONE_HOLD_MAX_S if len(RtuTransport._open_links) == 1 else PRECISE_WAIT_S
        while True:
            quiet_until = max(self._quiet_from, link.last_rx) + gap
            wait = quiet_until - time.monotonic()
            if wait > precise:
                await asyncio.sleep(wait - PRECISE_WAIT_S)  # wakes up to 1 ms late: still before the end
                self._discard(link)
                continue  # bytes that came meanwhile restart the silence
            if wait > 0:
                _hold(wait)
                if link.take_pending():
                    self._discard(link)
                    continue
            self.gaps_timed += 1
            self.gap_late_s += max(0.0, time.monotonic() - max(quiet_until, asked))
            return

    async def transact(self, unit: int, function: int, start: int, count: int, *,
                       turnaround_s: float = 0.0) -> list[int]:
        link = await self._open()
        self._discard(link)
        await self._await_silence(link, unit)
        self._discard(link)
        if link.broken:
            raise PortUnavailable(f"{self.endpoint}: {link.broken}")
        request = rtu.read_request(unit, function, start, count)
        tc = self.cost.char_time()
        sent = time.monotonic()
        link.write(request)
        self._last_unit = unit
        tx_end = sent + len(request) * tc
        # Waiting for: our request on the wire, the device thinking, the whole answer
        # on the wire, plus the configured timeout as the margin for everything else.
        deadline = tx_end + turnaround_s + rtu.response_len(count) * tc + self.cfg.timeout_s
        try:
            frame = await self._receive(link, unit, function, deadline)
        finally:
            self._quiet_from = max(tx_end, link.last_rx)
            if self._still_arriving:
                # Gave up on a frame whose rest may still be on the wire: the line is quiet only after it.
                self._quiet_from = max(self._quiet_from, link.last_rx + self._still_arriving * tc)
        try:
            response = rtu.parse_response(frame, unit, function, count)
        except rtu.FrameProblem as exc:
            raise FrameError(f"{self.endpoint}: {exc}", exc.reason) from None
        if response.exception_code is not None:
            raise DeviceException(f"unit {unit} answered exception {response.exception_code} to a read of "
                                  f"{count} registers at {start:#06x}", response.exception_code)
        assert response.registers is not None
        return response.registers

    async def _receive(self, link: _Link, unit: int, function: int, deadline: float) -> bytes:
        skipped = 0
        self._still_arriving = 0
        while True:
            if link.broken:
                raise PortUnavailable(f"{self.endpoint}: {link.broken}")
            try:
                need = rtu.expected_len(link.inbox, unit, function)
            except rtu.FrameProblem as exc:
                stray = rtu.stray_frame(link.inbox)
                if stray == 0 and time.monotonic() < deadline:
                    await link.wait_data(deadline - time.monotonic())  # a stray frame still arriving
                    continue
                if stray:
                    # A whole, valid answer from another unit: a late reply to an earlier
                    # request. Neither ours nor this device's fault; drop it and keep waiting.
                    del link.inbox[:stray]
                    self.noise_bytes += stray
                    continue
                start = rtu.answer_start(link.inbox, unit, function)
                if start is None:
                    start = len(link.inbox)  # all of it may be noise ahead of an answer still to come
                if start and skipped + start <= LEADING_NOISE_MAX:
                    # A byte or two of noise in front of the answer (lines without bias resistors
                    # produce them when a driver turns on): skip to where the answer starts; its
                    # CRC still decides whether it is one.
                    del link.inbox[:start]
                    self.noise_bytes += start
                    skipped += start
                    continue
                await self._drain(link, deadline)
                raise FrameError(f"{self.endpoint}: {exc}", exc.reason) from None
            if need is not None and len(link.inbox) >= need:
                frame = bytes(link.inbox[:need])
                del link.inbox[:need]
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if link.inbox:
                    got = len(link.inbox)
                    self._still_arriving = max(0, (need or rtu.MAX_FRAME_LEN) - got)
                    self._discard(link)
                    raise FrameError(f"{self.endpoint}: truncated answer from unit {unit} ({got} bytes)",
                                     "truncated")
                raise DeviceTimeout(f"no answer from unit {unit} on {self.endpoint}")
            await link.wait_data(remaining)

    async def _drain(self, link: _Link, deadline: float) -> None:
        """After garbage, wait until the line falls silent so the next request starts clean."""
        gap = self.gap_s
        while not link.broken:
            quiet = time.monotonic() - link.last_rx
            if quiet >= gap or time.monotonic() >= deadline:
                break
            await link.wait_data(gap - quiet)
        self._discard(link)

    def close(self) -> None:
        RtuTransport._open_links.discard(self)
        if self._link is not None:
            self._link.close()
            self._link = None
            self._last_unit = None
        self._unlock_device()  # the node may come back under another name


class ModbusTcpTransport:
    """Modbus TCP (MBAP framing) via pymodbus; the TCP stack does the timing."""

    def __init__(self, bus: BusConfig) -> None:
        self.cfg = bus
        self.endpoint = f"{bus.host}:{bus.port or 502}"
        self.noise_bytes = 0  # TCP framing cannot carry noise; kept for a uniform status
        self._client: AsyncModbusTcpClient | None = None

    async def transact(self, unit: int, function: int, start: int, count: int, *,
                       turnaround_s: float = 0.0) -> list[int]:
        from pymodbus import FramerType
        from pymodbus.client import AsyncModbusTcpClient
        from pymodbus.exceptions import ModbusException

        if self._client is None:
            # reconnect_delay=0 and retries=0: the scheduler decides when to retry and reconnect.
            self._client = AsyncModbusTcpClient(self.cfg.host or "", port=self.cfg.port or 502,
                                                framer=FramerType.SOCKET,
                                                timeout=self.cfg.timeout_s + turnaround_s, retries=0,
                                                reconnect_delay=0)
        client = self._client
        if not client.connected:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    ok = await client.connect()
            except TimeoutError:
                ok = False
            if not ok:
                self.close()
                raise PortUnavailable(f"cannot connect to {self.endpoint}")
        reader = client.read_input_registers if function == 4 else client.read_holding_registers
        try:
            response = await reader(start, count=count, device_id=unit)
        except ModbusException as exc:
            self.close()
            raise DeviceTimeout(f"no valid answer from unit {unit} on {self.endpoint}: {exc}") from exc
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            if code in GATEWAY_NO_RESPONSE:
                raise DeviceTimeout(f"gateway {self.endpoint} reports no answer from unit {unit} (exception {code})")
            raise DeviceException(f"unit {unit} answered exception {code} to a read of {count} registers at "
                                  f"{start:#06x}", code)
        registers = list(response.registers)
        if len(registers) != count:
            raise FrameError(f"unit {unit} returned {len(registers)} registers for {count}", "length")
        return registers

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _hold(seconds: float) -> None:
    """The end of a frame gap, in place: its last millisecond, or all of it on a line alone (see PRECISE_WAIT_S)."""
    time.sleep(seconds)


def make_transport(bus: BusConfig) -> RtuTransport | ModbusTcpTransport:
    return ModbusTcpTransport(bus) if bus.kind == "tcp" else RtuTransport(bus)
