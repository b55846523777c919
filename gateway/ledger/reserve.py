"""A few megabytes set aside next to the ledger, so that a full disk can still be made less full.

SQLite needs to write before it can free anything: pruning raw readings goes through the WAL,
and copying the WAL back into the database (which is what lets the WAL start over, and the file
shrink) may first have to grow the database file. On a disk with not one byte left, neither can
run, and the gateway could never make room by itself. The reserve is a file of
:data:`RESERVE_BYTES` (allocated, not written: no wear on the SD card) that the gateway deletes the
moment the disk is full, giving SQLite the room to checkpoint, prune and give pages back. It is
set aside again once the disk has space to spare.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import structlog

log = structlog.get_logger("gateway.maintenance")

RESERVE_FILE = "ledger.reserve"
RESERVE_BYTES = 8 * 1024 * 1024
"""Twice SQLite's WAL auto-checkpoint size: room for a checkpoint plus the first pruning steps."""
RESERVE_MAX_FRACTION = 16
"""On a small file system the reserve is at most 1/16 of it."""


def reserve_bytes(data_dir: Path) -> int:
    try:
        total = shutil.disk_usage(data_dir).total
    except OSError:
        return RESERVE_BYTES
    return min(RESERVE_BYTES, total // RESERVE_MAX_FRACTION)


def ensure(data_dir: Path, *, min_free_bytes: int) -> bool:
    """Set the reserve aside if it is missing and the disk can spare it; True if it is in place."""
    path = data_dir / RESERVE_FILE
    if path.exists():
        return True
    size = reserve_bytes(data_dir)
    try:
        if shutil.disk_usage(data_dir).free - size < min_free_bytes:
            return False
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return False
    try:
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        return False
    os.close(fd)
    log.info("disk_reserve_set", path=str(path), bytes=size)
    return True


def release(data_dir: Path) -> int:
    """Delete the reserve (the disk is full); returns the bytes given back."""
    path = data_dir / RESERVE_FILE
    try:
        size = path.stat().st_size
        path.unlink()
    except OSError:
        return 0
    log.warning("disk_reserve_released", path=str(path), bytes=size,
                reason="the disk is full: room for the ledger to prune raw readings and give pages back")
    return size
