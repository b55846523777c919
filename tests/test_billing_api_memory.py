"""The billing uplink leaves no garbage cycle behind a delivered batch (issue 11 item 6: flat RSS while draining).

httpx keeps each response in a reference cycle with its stream; the response holds its request and
the request its body (about 300 KB per 500 credits). Left to the cyclic collector, a long drain kept
a dozen or more bodies alive at a time and the drainer's RSS grew with the backlog.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import httpx
from stellar_sdk import Keypair

from cloud_sync.billing_api import NAME, BillingApiUplink
from cloud_sync.receiver import ReceiverStore, create_app
from gateway.clock import SystemClock
from gateway.config import BillingApiConfig
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.web.server import free_port, serving

T0 = 1_767_225_600_000
GW = "gw-mem"
KEY = Keypair.random()


async def test_delivered_batches_leave_no_response_to_the_cyclic_collector(tmp_path: Path) -> None:
    ledger = await Ledger.open(tmp_path / "gw", gateway_id=GW, keypair=KEY)
    readings = [Reading(m, T0 + k * 60_000, 10_000 + 7 * k) for m in ("m1", "m2") for k in range(20 * 15 + 1)]
    await ledger.commit_readings(sorted(readings, key=lambda r: r.t_ms), now_ms=1)
    store = ReceiverStore(tmp_path / "receiver.db", {GW: KEY.public_key})
    port = free_port()
    cfg = BillingApiConfig(url=f"http://127.0.0.1:{port}", batch_size=5, max_batch_age_s=0, timeout_s=5)
    uplink = BillingApiUplink(cfg, ledger, SystemClock(), gateway_id=GW, token="t", wakeup=asyncio.Event)
    responses: list[httpx.Response] = []
    try:
        async with serving(create_app(store, "t"), port=port):
            gc.collect()
            gc.disable()  # only reference counting frees anything now
            try:
                task = asyncio.create_task(uplink.run())
                async with asyncio.timeout(30):
                    while (await ledger.pending_count(NAME))[0]:
                        await asyncio.sleep(0.02)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                gc.set_debug(gc.DEBUG_SAVEALL)
                gc.collect()
                responses = [o for o in gc.garbage if isinstance(o, httpx.Response)]
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()
    finally:
        store.close()
        await ledger.close()
    assert uplink.progress.delivered == 40, "two meters' 20 intervals each, in batches of 5"
    assert responses == [], f"{len(responses)} delivered batches' responses were left to the cyclic collector"
