"""systemd's notify protocol (``Type=notify``): ready, alive, stopping, and "give me longer to start".

Its own module because both the daemon (readiness, the watchdog) and the ledger (a migration
that needs more than the start timeout) speak it, and the ledger must not import the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from typing import Final

import structlog

log = structlog.get_logger("gateway.sdnotify")

START_EXTENSION_S: Final = 120.0
"""Start time each extension asks for, counted from when systemd reads it: far more than a pause
of the loop between two extensions, so a busy SD card never lets the start timeout strike."""
EXTEND_EVERY_S: Final = 30.0
"""How often a long start step renews its extension (a quarter of what each one grants)."""


def notify(message: str) -> None:
    """Send one notification to systemd; a no-op when not started by it (no ``NOTIFY_SOCKET``)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        # Never blocks the event loop: a receiver that does not read (its queue is full) loses a
        # ping, which systemd's watchdog tolerates; a blocking send would stop every task.
        sock.setblocking(False)
        sock.sendto(message.encode(), address)


@contextlib.asynccontextmanager
async def start_extended(step: str) -> AsyncIterator[None]:
    """Keep asking systemd for more start time while ``step`` runs (``EXTEND_TIMEOUT_USEC``).

    A ledger migration rewrites whole tables: on a year-old ledger on an SD card that takes
    longer than systemd's start timeout (90 s unless configured). Killed there, the migration
    rolls back, the next start begins it again, and after ``StartLimitBurst`` tries the unit
    gives up for good. The step runs off the loop (aiosqlite's thread), so the loop is free to renew.
    """
    if not os.environ.get("NOTIFY_SOCKET"):
        yield
        return
    log.info("start_extended", step=step, extension_s=START_EXTENSION_S)

    async def renew() -> None:
        while True:
            notify(f"EXTEND_TIMEOUT_USEC={int(START_EXTENSION_S * 1_000_000)}")
            await asyncio.sleep(EXTEND_EVERY_S)

    renewing = asyncio.create_task(renew(), name=f"start-extended-{step}")
    try:
        yield
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
