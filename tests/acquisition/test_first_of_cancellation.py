"""The bus's "first of these waits" helper never swallows its caller's cancellation.

Seen as a demo that never stopped: SIGTERM cancelled a bus task at the moment its wait helper
was letting a losing wait finish; the helper suppressed that CancelledError as the loser's, the
bus went on polling, and the daemon waited for it forever.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.acquisition.modbus import _first_of


async def test_a_cancellation_during_the_losers_cleanup_reaches_the_caller() -> None:
    cleaning = asyncio.Event()

    async def winner() -> None:
        return None

    async def loser() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cleaning.set()
            await asyncio.sleep(0.05)  # its cleanup takes a moment
            raise

    task = asyncio.create_task(_first_of(winner(), loser()))
    await cleaning.wait()  # the helper is now waiting for the loser to end
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
