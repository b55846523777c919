"""The P2P planner and the Soroban uplink as a process of their own, for the SIGKILL tests.

``python tests/p2p/uplink_child.py SPEC.json``: opens the ledger in ``data_dir``, then makes the
delivery records that are due and sends them, until every agreement has a record and none is
left to send; prints ``done`` and exits 0. Killed at any instant, a restart finishes the work.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from stellar_sdk import Keypair as SdkKeypair

from cloud_sync.keys import Keypair
from cloud_sync.soroban.uplink import SorobanUplink
from gateway.clock import SystemClock
from gateway.config.p2p import SorobanConfig
from gateway.ledger.store import Ledger
from gateway.p2p.planner import Terms
from gateway.p2p.store import PENDING, Agreement, P2PStore


async def main(spec: dict[str, object]) -> None:
    key = Keypair.from_secret(Path(str(spec["key_file"])).read_text().strip())
    clock = SystemClock()
    ledger = await Ledger.open(Path(str(spec["data_dir"])), gateway_id=str(spec["gateway_id"]), keypair=key)
    try:
        cfg = SorobanConfig.model_validate(spec["soroban"])
        uplink = SorobanUplink(cfg, ledger, clock, SdkKeypair.from_secret(key.secret))
        agreements = [Agreement(Terms(a["id"], a["kwh"], a["start"], a["deadline"]), a["meter"], a["provider"])
                      for a in spec.get("agreements", [])]  # type: ignore[attr-defined]
        store = P2PStore(ledger)
        async with uplink.session():
            while True:
                if agreements:
                    await store.decide(agreements, gateway=str(spec["gateway_id"]), keypair=key, now=clock.now())
                worked = await uplink.step()
                records = await store.records()
                decided = {r.agreement_id for r in records}
                if (not worked and all(a.terms.agreement_id in decided for a in agreements)
                        and not any(r.state == PENDING for r in records)):
                    break
                if not worked:
                    await asyncio.sleep(0.05)
    finally:
        await ledger.close()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
