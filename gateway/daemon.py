"""The supervised daemon: one TaskGroup over sources, writer, uplinks and web.

Shutdown order matters for "nothing lost": sources stop first (no new
readings), then the writer commits what it has queued, then the uplinks get a
short, bounded chance to send the last credits, then the ledger checkpoints
and closes. Everything left unsent stays in the outbox for the next start.

A failure the daemon cannot run on (a damaged ledger, a bug in the writer) takes
the same orderly way out: it is kept, ``stop`` is set, and it is raised once
everything is closed. A storage failure is not one of them: the writer keeps the
readings and retries (:mod:`gateway.ledger.outage`) while the meters are still read.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from cloud_sync.keys import Keypair
from gateway import identity
from gateway.acquisition.modbus import ModbusBus
from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.errors import ConfigError, GatewayError, LedgerDiskFull, LedgerIntegrityError
from gateway.ledger import integrity, reserve
from gateway.ledger.maintenance import maintain
from gateway.ledger.store import Ledger
from gateway.ledger.writer import ReadingWriter
from gateway.liveness import Progress, Wedge, first_wedge
from gateway.profiles import Profile, resolve_profile
from gateway.sdnotify import notify
from gateway.status import GatewayStatus, UplinkProgress
from gateway.timetrust import TimeTrust, source_for

# Imported only where the configuration uses them (a box's memory is mostly imports): the MQTT
# source (aiomqtt), the billing API uplink (httpx), the web server (starlette, uvicorn) and the
# budget watcher (billing and its pydantic tariffs: only with a budget configured).
if TYPE_CHECKING:
    from cloud_sync.billing_api import BillingApiUplink
    from gateway.acquisition.mqtt import MqttSource
    from gateway.web.server import EmbeddedServer

log = structlog.get_logger("gateway.daemon")

BILLING_API = "billing_api"
"""The billing API uplink's name (cloud_sync.billing_api.NAME, not imported unless configured)."""
FINAL_SYNC_S = 2.0
"""Host seconds the uplinks get at shutdown; keeps SIGTERM-to-exit well under 5 s."""
STELLAR = "stellar"
"""The Stellar uplink's name (cloud_sync.stellar.uplink.NAME, not imported unless configured)."""
RESTART_DELAY_S = 5.0
"""A task that crashed on a bug is restarted after this long, not in a hot loop."""
CANCEL_AGAIN_S = 0.2
"""A task still running this long after it was cancelled is cancelled again (see :func:`_stop_tasks`)."""


@dataclass
class Running:
    """Handles to a running daemon, for the demo, tests and the CLI."""

    status: GatewayStatus
    ledger: Ledger
    writer: ReadingWriter
    web_port: int | None
    web_token: str
    """The web token ("" with [web] off: nothing serves the API then, so none is created)."""


WATCHDOG_ALARM = "watchdog"
WATCHDOG_CHECK_S = 5.0
"""Without a systemd watchdog, how often progress is still checked (for the log and the page)."""


def _watchdog_interval_s() -> float | None:
    """Half systemd's watchdog timeout (as sd_watchdog_enabled reads it), or None without one."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were started by a wrapper)
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


async def _watchdog(workers: Sequence[Progress], status: GatewayStatus) -> None:
    """Feed systemd's watchdog while every worker makes progress; stop, and say why once, when one is wedged.

    A wedged writer (a commit that never returns) or bus (a transaction that never ends) then gets
    the daemon restarted by systemd (``WatchdogSec``); should the step end before that, feeding resumes.
    """
    interval = _watchdog_interval_s()
    wedged: Wedge | None = None
    while True:
        wedge = first_wedge(workers)
        if wedge is None:
            if wedged is not None:
                log.warning("watchdog_fed_again", worker=wedged.worker, stuck_s=round(wedged.stuck_s))
                status.alarms.pop(WATCHDOG_ALARM, None)
            if interval is not None:
                notify("WATCHDOG=1")
        elif wedged is None:
            log.error("watchdog_starved", worker=wedge.worker, stuck_s=round(wedge.stuck_s),
                      limit_s=wedge.limit_s, systemd_watchdog=interval is not None)
            status.alarms[WATCHDOG_ALARM] = wedge.describe() if interval is not None else (
                f"{wedge.worker} has been stuck in one step for {wedge.stuck_s:.0f} s: restart the daemon")
        wedged = wedge if wedge is not None else None
        await asyncio.sleep(interval if interval is not None else WATCHDOG_CHECK_S)


async def _supervise(name: str, factory: Callable[[], Awaitable[None]]) -> None:
    """Keep a worker alive: a bug in one bus or uplink must not stop the others."""
    while True:
        try:
            await factory()
            return
        except GatewayError as exc:  # a known condition (e.g. the disk is full): its message says it all
            log.error("task_failed", task=name, error=str(exc), restart_in_s=RESTART_DELAY_S)
            await asyncio.sleep(RESTART_DELAY_S)
        except Exception:  # anything but cancellation is logged and restarted
            log.exception("task_crashed", task=name, restart_in_s=RESTART_DELAY_S)
            await asyncio.sleep(RESTART_DELAY_S)


async def _stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait for them to end, cancelling again any that runs on.

    A cancellation can be lost: Python 3.11's ``asyncio.wait_for`` returns the result instead of
    raising when the wait ends at the moment it is cancelled, and pymodbus waits for every
    transaction that way. A bus then polled on, the stop waited for it forever and SIGTERM was
    ignored (seen with a full disk). A second cancellation reaches it at its next wait.
    """
    for task in tasks:
        task.cancel()
    pending = {t for t in tasks if not t.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_S)
        for task in pending:
            log.debug("task_cancelled_again", task=task.get_name())
            task.cancel()
    for task in tasks:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("task_failed_at_stop", task=task.get_name(), error=str(error))


async def _essential(name: str, work: Awaitable[None], fatal: list[BaseException], stop: asyncio.Event) -> None:
    """A task the daemon cannot run without: its failure stops the daemon the orderly way."""
    try:
        await work
    except Exception as exc:  # kept and raised by run_daemon once everything is closed
        if isinstance(exc, GatewayError):
            log.error("gateway_cannot_continue", task=name, error=str(exc))
        else:
            log.exception("task_crashed", task=name, restart_in_s=None)
        fatal.append(exc)
        stop.set()


async def _open_ledger(cfg: GatewayConfig, keypair: Keypair) -> Ledger:
    """Open the ledger; on a full disk, give up the reserve once so SQLite has room to start."""
    try:
        return await Ledger.open(cfg.data_dir, gateway_id=cfg.gateway_id, keypair=keypair,
                                 estimate_gap_s=cfg.intervals.estimate_gap_s, require_own_key=True)
    except LedgerDiskFull:
        if not reserve.release(cfg.data_dir):
            raise
    return await Ledger.open(cfg.data_dir, gateway_id=cfg.gateway_id, keypair=keypair,
                             estimate_gap_s=cfg.intervals.estimate_gap_s, require_own_key=True)


def _has_budgets(cfg: GatewayConfig) -> bool:
    """Whether any meter has a budget: the watcher (which returns at once without one) is needed only then."""
    return any((meter := cfg.meter(m)) is not None and meter.budget is not None for m in cfg.all_meter_ids())


async def _watch_budgets(cfg: GatewayConfig, ledger: Ledger, clock: Clock, status: GatewayStatus) -> None:
    from gateway.reports.budget import watch_budgets  # billing, tariffs (pydantic): only with a budget

    await watch_budgets(cfg, ledger, clock, status, ledger)


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
    ledger = await _open_ledger(cfg, keypair)
    reserve.ensure(cfg.data_dir, min_free_bytes=cfg.ledger.min_free_mb * 1_048_576)
    fatal: list[BaseException] = []
    log.info("gateway_starting", gateway=cfg.gateway_id, key=keypair.public_key, data_dir=str(cfg.data_dir),
             meters=len(cfg.all_meter_ids()))
    try:
        status = GatewayStatus(cfg.gateway_id, keypair.public_key, clock.now())
        trust = TimeTrust(clock, source_for(cfg.time.trust), cfg.time.max_step_s, cfg.time.step_settle_s)
        writer = ReadingWriter(ledger, clock, status, trust=trust, flush_s=cfg.ledger.commit_every_s,
                               horizon_s=cfg.ledger.readings_retention_days * 86_400)
        buses = [ModbusBus(bus, profiles, clock, writer.submit, status) for bus in cfg.buses]
        mqtt: MqttSource | None = None
        if cfg.mqtt:
            from gateway.acquisition.mqtt import MqttSource

            mqtt = MqttSource(cfg.mqtt, clock, writer.submit, status, client_id=f"meter-gateway-{cfg.gateway_id}")
        telemetry = None
        if cfg.telemetry is not None and cfg.telemetry.enabled:
            from gateway.telemetry.publisher import TelemetryPublisher  # loaded only when configured

            # After the sources: it attaches to the live values of the meters they registered.
            telemetry = TelemetryPublisher.configured(cfg, profiles, status, ledger, clock,
                                                      wakeup=lambda: writer.credits_committed)
        uplink: BillingApiUplink | None = None
        if cfg.uplinks.billing_api:
            from cloud_sync.billing_api import BillingApiUplink

            uplink = BillingApiUplink(cfg.uplinks.billing_api, ledger, clock, gateway_id=cfg.gateway_id,
                                      token=api_token, wakeup=lambda: writer.credits_committed,
                                      progress=status.uplinks.setdefault(BILLING_API, UplinkProgress()))
        stellar = None
        if cfg.stellar:
            # Imported only when configured: stellar-sdk's transaction machinery costs ~40 MiB.
            from cloud_sync.stellar.uplink import for_daemon

            stellar = for_daemon(cfg, ledger, clock, keypair.to_sdk(), status, profiles, {b.cfg.name: b for b in buses},
                                 wakeup=lambda: writer.credits_committed)
        p2p = soroban = None
        if cfg.p2p:  # P2P deliveries (issue 9): the planner, and their uplink with [soroban] (stellar-sdk)
            from gateway.p2p.task import DeliveryPlanner

            p2p = DeliveryPlanner(cfg.p2p, ledger, clock, keypair, gateway_id=cfg.gateway_id,
                                  wakeup=lambda: writer.credits_committed)
        if cfg.soroban:
            from cloud_sync.soroban.uplink import for_daemon as soroban_uplink

            soroban = soroban_uplink(cfg, ledger, clock, keypair, status, (lambda: p2p.made) if p2p else None)
        uplink_names = (*((BILLING_API,) if uplink else ()), *((STELLAR,) if stellar else ()))
        web_token = ""
        server: EmbeddedServer | None = None
        sock: socket.socket | None = None
        if cfg.web.enabled:
            from gateway.web.app import WebContext, create_app
            from gateway.web.auth import load_or_create_token
            from gateway.web.server import make_server

            web_token = load_or_create_token(cfg.data_dir)
            ctx = WebContext(status, ledger, clock, web_token, uplink_names,
                             buses={b.cfg.name: b for b in buses}, config=cfg, profiles_dir=cfg.web.profiles_dir,
                             keypair=keypair)
            sock = _bind(cfg.web.listen, cfg.web.port)
            server = make_server(create_app(ctx), cfg.web.listen, cfg.web.port, cfg.web.tls)

        async with asyncio.TaskGroup() as tg:
            writer_task = tg.create_task(_essential("ledger-writer", writer.run(), fatal, stop), name="ledger-writer")
            workers = [tg.create_task(_supervise(f"bus:{b.cfg.name}", b.run), name=f"bus:{b.cfg.name}")
                       for b in buses]
            if mqtt:
                workers.append(tg.create_task(_supervise("mqtt", mqtt.run), name="mqtt"))
            if uplink:
                workers.append(tg.create_task(_supervise(BILLING_API, uplink.run), name=BILLING_API))
            if telemetry:
                workers.append(tg.create_task(_supervise("telemetry", telemetry.run), name="telemetry"))
            if stellar:
                workers.append(tg.create_task(_supervise(STELLAR, stellar.run), name=STELLAR))
            for name, task in (("p2p", p2p), ("soroban", soroban)):
                if task is not None:
                    workers.append(tg.create_task(_supervise(name, task.run), name=name))
            progress = [writer.progress, *(b.progress for b in buses)]
            workers.append(tg.create_task(_watchdog(progress, status), name="watchdog"))
            workers.append(tg.create_task(
                _supervise("maintenance", lambda: maintain(ledger, clock, cfg.data_dir, cfg.ledger, status,
                                                           writer.outage.make_room)),
                name="maintenance"))
            workers.append(tg.create_task(
                _essential("ledger-check", ledger.background_check(), fatal, stop), name="ledger-check"))
            if _has_budgets(cfg):
                workers.append(tg.create_task(
                    _supervise("budgets", lambda: _watch_budgets(cfg, ledger, clock, status)), name="budgets"))
            web_task = None
            if server and sock:
                web_task = tg.create_task(server.serve(sockets=[sock]), name="web")
                while not server.started and not web_task.done():  # noqa: ASYNC110 - uvicorn has no started event
                    await asyncio.sleep(0.01)
            port = int(sock.getsockname()[1]) if sock else None
            if on_started:
                on_started(Running(status, ledger, writer, port, web_token))
            notify("READY=1")
            log.info("gateway_running", web_port=port)

            await stop.wait()
            notify("STOPPING=1")
            log.info("gateway_stopping")
            await _stop_tasks(workers)
            # The writer is cancelled once: it then commits what it holds (shielded), which a second
            # cancellation would leave running past the close. The stop's deadline bounds it.
            writer_task.cancel()
            await asyncio.gather(writer_task, return_exceptions=True)
            if final_sync_s > 0:  # both uplinks at once: neither's last batch waits for the other's
                await asyncio.gather(*(u.drain(final_sync_s) for u in (uplink, stellar, soroban) if u is not None))
            if server and web_task:
                server.should_exit = True
        log.info("gateway_stopped", readings=status.readings_committed, credits=status.credits_created)
    finally:
        await ledger.close()
    for exc in fatal:
        if isinstance(exc, LedgerIntegrityError):
            integrity.mark_damaged(cfg.data_dir, exc.finding)  # after the close: the next start refuses at once
        raise exc
