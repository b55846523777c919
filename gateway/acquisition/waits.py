"""Waiting for the first of several things, cleanly (the bus waits for a slot, a request or a timer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def first_of(*waits: Awaitable[object]) -> None:
    """Wait until the first of ``waits`` is done; cancel the others and wait for them to end."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        # asyncio.wait never raises the tasks' CancelledError, only ours: awaiting each task under
        # suppress(CancelledError) also swallowed a cancellation of this task arriving meanwhile,
        # and the bus ran on after the daemon had cancelled it (a stop that never ended).
        await asyncio.wait(tasks)
        for t in tasks:
            if not t.cancelled() and (error := t.exception()) is not None:
                raise error
