"""The supervised daemon: one TaskGroup over sources, writer, uplinks and web.

Shutdown order matters for "nothing lost": sources stop first (no new
readings), then the writer commits what it has queued, then the uplinks get a
short, bounded chance to send the last credits, then the ledger checkpoints
and closes. Everything left unsent stays in the outbox for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from cloud_sync.billing_api import NAME as BILLING_API
from cloud_sync.billing_api import BillingApiUplink
from gateway import identity
from gateway.acquisition.modbus import ModbusBus
from gateway.acquisition.mqtt import MqttSource
from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.errors import ConfigError
from gateway.ledger.maintenance import maintain
from gateway.ledger.store import Ledger
from gateway.ledger.writer import ReadingWriter
from gateway.profiles import Profile, resolve_profile
from gateway.reports.budget import watch_budgets
from gateway.status import GatewayStatus, UplinkProgress
from gateway.timetrust import TimeTrust, source_for
from gateway.web.app import WebContext, create_app
from gateway.web.auth import load_or_create_token
from gateway.web.server import make_server

log = structlog.get_logger("gateway.daemon")

FINAL_SYNC_S = 2.0
"""Host seconds the uplinks get at shutdown; keeps SIGTERM-to-exit well under 5 s."""
STELLAR = "stellar"
"""The Stellar uplink's name (cloud_sync.stellar.uplink.NAME, not imported unless configured)."""
RESTART_DELAY_S = 5.0
"""A task that crashed on a bug is restarted after this long, not in a hot loop."""


@dataclass
class Running:
    """Handles to a running daemon, for the demo, tests and the CLI."""

    status: GatewayStatus
    ledger: Ledger
    writer: ReadingWriter
    web_port: int | None
    web_token: str


def _sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about readiness and liveness; no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


async def _watchdog() -> None:
    usec = int(os.environ.get("WATCHDOG_USEC", "0"))
    if not usec:
        return
    while True:
        _sd_notify("WATCHDOG=1")
        await asyncio.sleep(usec / 2_000_000)


async def _supervise(name: str, factory: Callable[[], Awaitable[None]]) -> None:
    """Keep a worker alive: a bug in one bus or uplink must not stop the others."""
    while True:
        try:
            await factory()
            return
        except Exception:  # anything but cancellation is logged and restarted
            log.exception("task_crashed", task=name, restart_in_s=RESTART_DELAY_S)
            await asyncio.sleep(RESTART_DELAY_S)


def _read_secret(path: os.PathLike[str] | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from None


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"web: cannot listen on {host}:{port} ({exc.strerror}); "
                          "choose another [web] port or stop what uses it") from None
    sock.listen(64)
    sock.setblocking(False)
    return sock


async def run_daemon(cfg: GatewayConfig, clock: Clock, stop: asyncio.Event, *,
                     on_started: Callable[[Running], None] | None = None,
                     final_sync_s: float = FINAL_SYNC_S, config_dir: Path | None = None) -> None:
    keypair = identity.load_or_create(cfg.data_dir)
    profiles: dict[str, Profile] = {}
    for bus in cfg.buses:
        for meter in bus.meters:
            profiles[meter.id] = resolve_profile(meter.profile, config_dir)
    api_token = _read_secret(cfg.uplinks.billing_api.token_file) if cfg.uplinks.billing_api else None
    ledger = await Ledger.open(cfg.data_dir, gateway_id=cfg.gateway_id, keypair=keypair,
                               estimate_gap_s=cfg.intervals.estimate_gap_s)
    log.info("gateway_starting", gateway=cfg.gateway_id, key=keypair.public_key, data_dir=str(cfg.data_dir),
             meters=len(cfg.all_meter_ids()))
    orderly = False
    try:
        status = GatewayStatus(cfg.gateway_id, keypair.public_key, clock.now())
        trust = TimeTrust(clock, source_for(cfg.time.trust), cfg.time.max_step_s, cfg.time.step_settle_s)
        writer = ReadingWriter(ledger, clock, status, trust=trust, flush_s=cfg.ledger.commit_every_s)
        buses = [ModbusBus(bus, profiles, clock, writer.submit, status) for bus in cfg.buses]
        mqtt = None
        if cfg.mqtt:
            last_t = {m.id: s.last_t_ms / 1000 for m in cfg.mqtt.meters
                      if (s := ledger.meter_state(m.id)).last_t_ms is not None}
            mqtt = MqttSource(cfg.mqtt, clock, writer.submit, status, client_id=f"meter-gateway-{cfg.gateway_id}",
                              last_t=last_t)
        uplink = None
        if cfg.uplinks.billing_api:
            uplink = BillingApiUplink(cfg.uplinks.billing_api, ledger, clock, gateway_id=cfg.gateway_id,
                                      token=api_token, wakeup=lambda: writer.credits_committed,
                                      progress=status.uplinks.setdefault(BILLING_API, UplinkProgress()))
        stellar = None
        if cfg.stellar:
            # Imported only when configured: stellar-sdk's transaction machinery costs ~40 MiB.
            from cloud_sync.stellar.uplink import for_daemon

            stellar = for_daemon(cfg, ledger, clock, keypair, status, profiles, {b.cfg.name: b for b in buses},
                                 wakeup=lambda: writer.credits_committed)
        uplink_names = (*((BILLING_API,) if uplink else ()), *((STELLAR,) if stellar else ()))
        web_token = load_or_create_token(cfg.data_dir)
        server = sock = None
        if cfg.web.enabled:
            ctx = WebContext(status, ledger, clock, web_token, uplink_names,
                             buses={b.cfg.name: b for b in buses}, config=cfg)
            sock = _bind(cfg.web.listen, cfg.web.port)
            server = make_server(create_app(ctx), cfg.web.listen, cfg.web.port)

        async with asyncio.TaskGroup() as tg:
            writer_task = tg.create_task(writer.run(), name="ledger-writer")
            workers = [tg.create_task(_supervise(f"bus:{b.cfg.name}", b.run), name=f"bus:{b.cfg.name}")
                       for b in buses]
            if mqtt:
                workers.append(tg.create_task(_supervise("mqtt", mqtt.run), name="mqtt"))
            if uplink:
                workers.append(tg.create_task(_supervise(BILLING_API, uplink.run), name=BILLING_API))
            if stellar:
                workers.append(tg.create_task(_supervise(STELLAR, stellar.run), name=STELLAR))
            workers.append(tg.create_task(_watchdog(), name="watchdog"))
            workers.append(tg.create_task(
                _supervise("maintenance", lambda: maintain(ledger, clock, cfg.data_dir, cfg.ledger, status)),
                name="maintenance"))
            workers.append(tg.create_task(
                _supervise("budgets", lambda: watch_budgets(cfg, ledger, clock, status, ledger)), name="budgets"))
            web_task = None
            if server and sock:
                web_task = tg.create_task(server.serve(sockets=[sock]), name="web")
                while not server.started and not web_task.done():  # noqa: ASYNC110 - uvicorn has no started event
                    await asyncio.sleep(0.01)
            port = int(sock.getsockname()[1]) if sock else None
            if on_started:
                on_started(Running(status, ledger, writer, port, web_token))
            _sd_notify("READY=1")
            log.info("gateway_running", web_port=port)

            await stop.wait()
            _sd_notify("STOPPING=1")
            log.info("gateway_stopping")
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            writer_task.cancel()
            await asyncio.gather(writer_task, return_exceptions=True)
            if final_sync_s > 0:  # both uplinks at once: neither's last batch waits for the other's
                await asyncio.gather(*(u.drain(final_sync_s) for u in (uplink, stellar) if u is not None))
            if server and web_task:
                server.should_exit = True
        log.info("gateway_stopped", readings=status.readings_committed, credits=status.credits_created)
        orderly = True
    finally:
        await ledger.close(clean=orderly)
