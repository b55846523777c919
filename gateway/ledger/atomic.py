"""Writes a cancellation cannot cut in half (the outboxes' settle steps).

A shutdown (SIGTERM) or an uplink's drain deadline cancels the task doing a write; the write itself
runs to its end and only then is the cancellation delivered, so what memory believes and what the
ledger holds never disagree about a settled envelope or record.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def atomic(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(method)
    async def shielded(*args: P.args, **kwargs: P.kwargs) -> R:
        task = asyncio.ensure_future(method(*args, **kwargs))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task])
            raise
    return shielded
