"""Keeping the ledger within the SD card: raw-reading retention and low-disk handling.

What may go when space runs short, in order: raw readings (their energy is
already in intervals, and the meter's register holds it anyway), first the
old ones, then all but the newest per meter. Intervals and credits — the
billing data — are never pruned here; if the disk is still short after that,
the alarm says so and a person must act before the ledger itself cannot write.

The pass runs every :data:`MAINTENANCE_PERIOD_S`, and at once when the writer finds
the disk full (``make_room``): then the reserve (:mod:`gateway.ledger.reserve`) is
given up first, so SQLite has the room to prune and give pages back. A pass never
fails on the storage: each step that cannot run is logged (once while it keeps
failing) and the others still run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import structlog

from gateway.clock import Clock
from gateway.config.model import LedgerConfig
from gateway.errors import LedgerIntegrityError, LedgerStorageError
from gateway.ledger import reserve
from gateway.ledger.faults import free_mb as _free_mb
from gateway.ledger.store import Ledger
from gateway.status import GatewayStatus

log = structlog.get_logger("gateway.maintenance")

MAINTENANCE_PERIOD_S = 600.0
"""Clock seconds between checks; readings accrue slowly, disks fill slowly."""
DAY_MS = 86_400_000
SHRUNK_RETENTION_DAYS = 1.0
"""Raw-reading retention while the disk is low."""
ALARM = "disk_low"

_T = TypeVar("_T")
_failing: set[str] = set()
"""Maintenance steps failing on the storage now: logged when they start and stop failing."""


def free_mb(path: Path) -> float:
    found = _free_mb(path)
    return found if found is not None else 0.0


async def _step(name: str, work: Awaitable[_T], default: _T) -> _T:
    """Run one step; a storage failure is logged once (per spell) and ``default`` returned."""
    try:
        result = await work
    except LedgerIntegrityError:
        raise
    except LedgerStorageError as exc:
        if name not in _failing:
            _failing.add(name)
            log.warning("maintenance_step_failed", step=name, error=str(exc))
        return default
    if name in _failing:
        _failing.discard(name)
        log.info("maintenance_step_recovered", step=name)
    return result


async def maintain_once(ledger: Ledger, clock: Clock, data_dir: Path, cfg: LedgerConfig,
                        status: GatewayStatus, *, free: float | None = None, disk_full: bool = False) -> int:
    """One pass; returns the number of readings pruned.

    ``free`` overrides the disk probe (tests); ``disk_full``: the writer found the disk full.
    """
    now_ms = int(clock.now() * 1000)
    if disk_full:
        reserve.release(data_dir)
    available = free_mb(data_dir) if free is None else free
    low = disk_full or available < cfg.min_free_mb
    retention_days = SHRUNK_RETENTION_DAYS if low else cfg.readings_retention_days
    pruned = await _step("prune_readings", ledger.prune_readings(
        older_than_ms=now_ms - int(retention_days * DAY_MS)), 0)
    # The newest delivered batch is kept: it carries the sent horizon for late-reading revisions.
    await _step("prune_history", ledger.prune_history(
        older_than_ms=now_ms - int(cfg.readings_retention_days * DAY_MS)), 0)
    if low:
        pruned += await _step("prune_readings", ledger.prune_readings(older_than_ms=now_ms, keep_latest=True), 0)
        released = await _step("release_free_pages", ledger.release_free_pages(), 0)
        still = free_mb(data_dir) if free is None else free
        message = (f"Disk low: {still:.0f} MB free (alarm below {cfg.min_free_mb} MB). Raw readings were pruned; "
                   "billing data is kept. Free space or replace the SD card.")
        if ALARM not in status.alarms:
            log.error("disk_low", free_mb=round(still), min_free_mb=cfg.min_free_mb, pruned=pruned,
                      pages_released=released)
            if not await _step("auto_vacuum_enabled", ledger.auto_vacuum_enabled(), True):
                # Freed pages are reused by the ledger, but the file cannot shrink until switched.
                log.warning("ledger_space_not_returned", reason="ledger created without auto-vacuum; it is "
                            "switched once the disk has about twice the ledger's size free")
            await _step("record_event", ledger.record_event("disk_low", t_ms=now_ms, detail=message), None)
        status.alarms[ALARM] = message
    else:
        if status.alarms.pop(ALARM, None):
            log.info("disk_ok", free_mb=round(available))
        await _enable_auto_vacuum(ledger, available, cfg)
        reserve.ensure(data_dir, min_free_bytes=cfg.min_free_mb * 1_048_576)
    if pruned:
        log.info("readings_pruned", n=pruned, retention_days=retention_days)
    return pruned


async def _enable_auto_vacuum(ledger: Ledger, available_mb: float, cfg: LedgerConfig) -> None:
    """Give a ledger created by an older version (no auto-vacuum) the means to return space.

    Done here, once, and not as a schema migration when the ledger opens: the VACUUM that
    switches it rewrites the whole file, which on an SD card takes minutes for a large ledger
    (past systemd's start timeout) and needs about twice its size free (a migration failing on
    a full disk would keep the gateway from starting). Here it runs only while the disk is not
    low and the rewrite fits above the alarm threshold, with the daemon already up; readings
    queue meanwhile (their energy is in the registers in any case).
    """
    if ledger.vacuum_tried or await _step("auto_vacuum_enabled", ledger.auto_vacuum_enabled(), True):
        return
    size_mb = ledger.file_bytes() / 1_048_576
    if available_mb - 2 * size_mb < cfg.min_free_mb:
        return
    log.info("ledger_vacuum_start", size_mb=round(size_mb), reason="switching on incremental auto-vacuum")
    if await ledger.enable_auto_vacuum():
        log.info("ledger_vacuum_done", size_mb=round(ledger.file_bytes() / 1_048_576))


async def maintain(ledger: Ledger, clock: Clock, data_dir: Path, cfg: LedgerConfig, status: GatewayStatus,
                   make_room: asyncio.Event | None = None) -> None:
    """Every period, and at once whenever ``make_room`` is set (the writer found the disk full)."""
    make_room = make_room or asyncio.Event()
    while True:
        disk_full = make_room.is_set()
        make_room.clear()
        await maintain_once(ledger, clock, data_dir, cfg, status, disk_full=disk_full)
        period = asyncio.ensure_future(clock.sleep(MAINTENANCE_PERIOD_S))
        woken = asyncio.ensure_future(make_room.wait())
        try:
            await asyncio.wait([period, woken], return_when=asyncio.FIRST_COMPLETED)
        finally:
            period.cancel()
            woken.cancel()
            await asyncio.wait([period, woken])
