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
from gateway.channels import Channel
from gateway.clock import SystemClock
from gateway.config.p2p import SorobanConfig
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.p2p.planner import Decision, Terms
from gateway.p2p.store import PENDING, Agreement, P2PStore


async def feed(ledger: Ledger, spec: dict[str, object]) -> bool:
    """Commit the provider meter's next export reading of a fixed schedule; False when all are in.

    The schedule resumes from the ledger (its newest export reading), so a restart neither repeats
    nor skips one: reading k is at ``t0 + k * step_s`` with the register at ``wh0 + k * wh_per_step``,
    ``per_commit`` of them per write transaction.
    """
    f = spec.get("feed")
    if not isinstance(f, dict):
        return False
    if f["kind"] == "records":
        return await feed_records(ledger, spec, f)
    rows = await ledger.read_rows("SELECT MAX(t_ms) FROM readings WHERE meter=? AND channel=?",
                                  (f["meter"], Channel.EXPORT.value))
    k = 0 if rows[0][0] is None else (int(rows[0][0]) // 1000 - int(f["t0"])) // int(f["step_s"]) + 1
    if k >= int(f["readings"]):
        return False
    batch = range(k, min(k + int(f.get("per_commit", 1)), int(f["readings"])))
    readings = [Reading(str(f["meter"]), (int(f["t0"]) + j * int(f["step_s"])) * 1000,
                        int(f["wh0"]) + j * int(f["wh_per_step"]), channel=Channel.EXPORT) for j in batch]
    await ledger.commit_readings(readings, now_ms=readings[-1].t_ms + 1000)
    return True


async def feed_records(ledger: Ledger, spec: dict[str, object], f: dict[str, object]) -> bool:
    """Without export intervals: the next agreement's record made directly (one write transaction)."""
    store = P2PStore(ledger)
    done = {r.agreement_id for r in await store.records()}
    todo = [a for a in f["agreements"] if a["id"] not in done]  # type: ignore[attr-defined]
    if not todo:
        return False
    a = todo[0]
    key = Keypair.from_secret(Path(str(spec["key_file"])).read_text().strip())
    agreement = Agreement(Terms(a["id"], a["kwh"], 0, 2**40), "solar-1", a["provider"])
    reading = 5_000_000 + 1000 * int(a["id"])
    await store.insert_record(Decision(a["id"], a["kwh"], "quantity", (), 0, 0, reading, 0), agreement,
                              gateway=str(spec["gateway_id"]), keypair=key, now=0.0)
    return True


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
        print("ready", flush=True)
        async with uplink.session():
            while True:
                fed = await feed(ledger, spec)
                if agreements:
                    await store.decide(agreements, gateway=str(spec["gateway_id"]), keypair=key, now=clock.now())
                worked = await uplink.step()
                records = await store.records()
                decided = {r.agreement_id for r in records}
                if (not worked and not fed and all(a.terms.agreement_id in decided for a in agreements)
                        and not any(r.state == PENDING for r in records)):
                    break
                if not worked:
                    await asyncio.sleep(float(spec.get("pause_s", 0.05)))  # type: ignore[arg-type]
    finally:
        await ledger.close()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
