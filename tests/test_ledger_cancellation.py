"""A task cancelled mid-transaction (SIGTERM cancels every worker) leaves the ledger usable.

Found by the widened crash test: a cancellation that arrived while ``BEGIN`` was
still running in aiosqlite's thread left the write connection inside a
transaction nobody rolled back; every later transaction failed, and the orderly
stop died on "database table is locked" with exit 1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from stellar_sdk import Keypair

from gateway.intervals import Reading
from gateway.ledger.store import Ledger

T0 = 1_767_225_600_000
STEPS = 12
"""Cancel after 0, 1, ... loop iterations: lands before, during and after each statement."""


async def test_cancelling_at_any_point_of_a_transaction_leaves_no_transaction_open(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=Keypair.random())
    outcomes = set()
    try:
        for steps in range(STEPS):
            task = asyncio.create_task(ledger.record_event("probe", t_ms=steps))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            outcomes.add(type((await asyncio.gather(task, return_exceptions=True))[0]).__name__)
            # The next writer must get its own transaction.
            result = await ledger.commit_readings([Reading("m", T0 + steps * 60_000, 1000 + steps)], now_ms=1)
            assert result.dispositions, f"cancelled after {steps} steps: the ledger refused the next commit"
    finally:
        await ledger.close()  # used to fail: "database table is locked"
    assert "CancelledError" in outcomes, "some cancellations landed mid-transaction"
