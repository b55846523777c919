"""Exactly-once delivery while the billing API misbehaves in every way it can.

The real reference receiver sits behind (1) an ASGI wrapper that answers
scripted faults — 500 before committing, 503 *after* committing (ack lost),
a slow answer, an answer so slow the client times out after the commit, 429
with Retry-After — and (2) a TCP proxy that resets the connection after the
receiver has committed and answered (the ack is lost on the wire). The uplink
must end with every credit stored exactly once, in order, verified.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from stellar_sdk import Keypair

from cloud_sync.billing_api import NAME, BillingApiUplink
from cloud_sync.credit import ChainTip, verify
from cloud_sync.receiver import ReceiverStore, create_app
from gateway.clock import SystemClock
from gateway.config import BillingApiConfig
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.web.server import free_port, serving

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

GW = "gw-faults"
KEY = Keypair.random()
CLIENT_TIMEOUT_S = 1.0
T0 = 1_767_225_600_000


class Faulty:
    """Wraps the receiver app; the n-th POST gets the n-th scripted behaviour."""

    def __init__(self, app: Any, script: list[str]) -> None:
        self.app = app
        self.script = script
        self.seen: list[tuple[float, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        fault = self.script[len(self.seen)] if len(self.seen) < len(self.script) else "ok"
        self.seen.append((time.monotonic(), fault))
        if fault in ("500", "429"):
            headers = [(b"retry-after", b"1")] if fault == "429" else []
            await send({"type": "http.response.start", "status": int(fault), "headers": headers})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        if fault == "slow":
            await asyncio.sleep(CLIENT_TIMEOUT_S / 3)
        if fault in ("commit_then_503", "commit_then_hang"):
            async def swallow(message: MutableMapping[str, Any]) -> None:
                return None
            await self.app(scope, receive, swallow)  # the receiver commits; its answer is lost
            if fault == "commit_then_hang":
                await asyncio.sleep(CLIENT_TIMEOUT_S * 3)
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        await self.app(scope, receive, send)


class ResetProxy:
    """TCP proxy; for chosen requests the receiver's answer is dropped and the client gets a RST."""

    def __init__(self, upstream_port: int, reset_requests: set[int]) -> None:
        self.upstream_port = upstream_port
        self.reset_requests = reset_requests
        self.requests = 0
        self.resets = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        current = [0]

        async def to_receiver() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    if data.startswith(b"POST "):
                        self.requests += 1
                        current[0] = self.requests
                    up_writer.write(data)
                    await up_writer.drain()
            with contextlib.suppress(ConnectionError, RuntimeError):
                up_writer.close()

        async def to_client() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await up_reader.read(65536):
                    if current[0] in self.reset_requests:
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        self.resets += 1
                        writer.transport.abort()
                        return
                    writer.write(data)
                    await writer.drain()
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.close()

        await asyncio.gather(to_receiver(), to_client())
        up_writer.close()

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()


async def test_every_fault_still_gives_exactly_once(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, gateway_id=GW, keypair=KEY)
    readings = [Reading(m, T0 + k * 300_000, 1000 + 25 * k) for m in ("a", "b") for k in range(3 * 40 + 1)]
    await ledger.commit_readings(readings, now_ms=1)
    total = ledger.max_credit_id
    assert total == 80

    store = ReceiverStore(tmp_path / "receiver.db", {GW: KEY.public_key})
    script = ["500", "commit_then_503", "ok", "slow", "commit_then_hang", "429", "ok", "ok", "500", "ok"]
    faulty = Faulty(create_app(store, "tok"), script)
    receiver_port = free_port()
    async with serving(faulty, port=receiver_port):
        proxy = ResetProxy(receiver_port, reset_requests={3, 8})  # two answers lost after a commit
        uplink = await _drain_through(proxy, ledger)
    await _check(faulty, script, proxy, ledger, uplink, store, total)


async def _drain_through(proxy: ResetProxy, ledger: Ledger) -> BillingApiUplink:
    proxy_port = await proxy.start()

    cfg = BillingApiConfig(url=f"http://127.0.0.1:{proxy_port}", batch_size=10, max_batch_age_s=0,
                           timeout_s=CLIENT_TIMEOUT_S, backoff_max_s=1)
    uplink = BillingApiUplink(cfg, ledger, SystemClock(), gateway_id=GW, token="tok", wakeup=asyncio.Event)
    task = asyncio.create_task(uplink.run())
    try:
        async with asyncio.timeout(90):
            while (await ledger.pending_count(NAME))[0]:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await proxy.stop()
    return uplink


async def _check(faulty: Faulty, script: list[str], proxy: ResetProxy, ledger: Ledger, uplink: BillingApiUplink,
                 store: ReceiverStore, total: int) -> None:
    faults = [f for _, f in faulty.seen]
    assert faults[: len(script)] == script, "every scripted fault was met"
    assert proxy.resets == 2, "both answers were lost to a connection reset"
    times = {f: t for t, f in faulty.seen}
    after_429 = [t for t, _ in faulty.seen if t > times["429"]]
    assert after_429[0] - times["429"] >= 0.95, "Retry-After was honoured"

    summary = await ledger.uplink_summary(NAME)
    assert summary.dead_batches == 0
    assert uplink.progress.delivered == total
    for meter in ("a", "b"):
        held = store.credits(GW, meter)
        assert [c["credit"]["seq"] for c in held] == list(range(1, 41)), f"{meter}: once each, in order"
        tip = None
        for item in held:
            body, digest = verify(item, expected_key=KEY.public_key, tip=tip)
            tip = ChainTip(body["seq"], digest)
    with contextlib.closing(store._db.cursor()) as cur:
        replays = cur.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    assert replays >= total // 10
    store.close()
    await ledger.close()
