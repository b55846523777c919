"""Keeping the ledger within the SD card: raw-reading retention and low-disk handling.

What may go when space runs short, in order: raw readings (their energy is
already in intervals, and the meter's register holds it anyway), first the
old ones, then all but the newest per meter. Intervals and credits — the
billing data — are never pruned here; if the disk is still short after that,
the alarm says so and a person must act before the ledger itself cannot write.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import structlog

from gateway.clock import Clock
from gateway.config.model import LedgerConfig
from gateway.ledger.store import Ledger
from gateway.status import GatewayStatus

log = structlog.get_logger("gateway.maintenance")

MAINTENANCE_PERIOD_S = 600.0
"""Clock seconds between checks; readings accrue slowly, disks fill slowly."""
DAY_MS = 86_400_000
SHRUNK_RETENTION_DAYS = 1.0
"""Raw-reading retention while the disk is low."""


def free_mb(path: Path) -> float:
    return shutil.disk_usage(path).free / 1_048_576


async def maintain_once(ledger: Ledger, clock: Clock, data_dir: Path, cfg: LedgerConfig,
                        status: GatewayStatus, *, free: float | None = None) -> int:
    """One pass; returns the number of readings pruned. ``free`` overrides the disk probe (tests)."""
    now_ms = int(clock.now() * 1000)
    available = free_mb(data_dir) if free is None else free
    low = available < cfg.min_free_mb
    retention_days = SHRUNK_RETENTION_DAYS if low else cfg.readings_retention_days
    pruned = await ledger.prune_readings(older_than_ms=now_ms - int(retention_days * DAY_MS))
    # The newest delivered batch is kept: it carries the sent horizon for late-reading revisions.
    await ledger.prune_history(older_than_ms=now_ms - int(cfg.readings_retention_days * DAY_MS))
    if low:
        pruned += await ledger.prune_readings(older_than_ms=now_ms, keep_latest=True)
        released = await ledger.release_free_pages()
        still = free_mb(data_dir) if free is None else free
        message = (f"Disk low: {still:.0f} MB free (alarm below {cfg.min_free_mb} MB). Raw readings were pruned; "
                   "billing data is kept. Free space or replace the SD card.")
        if "disk_low" not in status.alarms:
            log.error("disk_low", free_mb=round(still), min_free_mb=cfg.min_free_mb, pruned=pruned,
                      pages_released=released)
            if not await ledger.auto_vacuum_enabled():
                # Freed pages are reused by the ledger, but the file cannot shrink until switched.
                log.warning("ledger_space_not_returned", reason="ledger created without auto-vacuum; it is "
                            "switched once the disk has about twice the ledger's size free")
            await ledger.record_event("disk_low", t_ms=now_ms, detail=message)
        status.alarms["disk_low"] = message
    else:
        if status.alarms.pop("disk_low", None):
            log.info("disk_ok", free_mb=round(available))
        await _enable_auto_vacuum(ledger, available, cfg)
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
    if ledger.vacuum_tried or await ledger.auto_vacuum_enabled():
        return
    size_mb = ledger.file_bytes() / 1_048_576
    if available_mb - 2 * size_mb < cfg.min_free_mb:
        return
    log.info("ledger_vacuum_start", size_mb=round(size_mb), reason="switching on incremental auto-vacuum")
    if await ledger.enable_auto_vacuum():
        log.info("ledger_vacuum_done", size_mb=round(ledger.file_bytes() / 1_048_576))


async def maintain(ledger: Ledger, clock: Clock, data_dir: Path, cfg: LedgerConfig, status: GatewayStatus) -> None:
    while True:
        await maintain_once(ledger, clock, data_dir, cfg, status)
        await clock.sleep(MAINTENANCE_PERIOD_S)
