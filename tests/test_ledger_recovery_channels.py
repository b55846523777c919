"""recover-chains per (meter, channel): a lost ledger's import and export chains both go on.

A real ledger with both channels delivers to a real receiver over HTTP; the ledger is lost;
recovery asks the receiver (one request per meter) and starts a new ledger in which each channel
of each meter continues its own chain, from its own register. The receiver must accept the new
ledger's credits of both channels as the next links.
"""

from __future__ import annotations

import json
from pathlib import Path

from stellar_sdk import Keypair

from cloud_sync.receiver import create_app, open_store
from gateway.channels import Channel
from gateway.intervals import Reading
from gateway.ledger import recovery
from gateway.ledger.store import Ledger
from gateway.web.server import serving

GW = "gw-r"
KEY = Keypair.from_raw_ed25519_seed(bytes(range(3, 35)))
TOKEN = "recovery-test-token"
T0 = 1_767_225_600_000


def _readings(start_min: int, end_min: int) -> list[Reading]:
    out = []
    for minute in range(start_min, end_min):
        t = T0 + minute * 60_000
        out += [Reading("m", t, 50_000 + 9 * minute), Reading("m", t, 7_000 + 4 * minute, channel=Channel.EXPORT),
                Reading("plain", t, 20_000 + 5 * minute)]
    return out


async def test_recovery_continues_each_channels_chain(tmp_path: Path) -> None:
    store = await open_store(str(tmp_path / "receiver.db"))
    await store.ensure_enrolled(GW, KEY.public_key, 0)

    async def deliver(ledger: Ledger) -> list[dict[str, object]]:
        results: list[dict[str, object]] = []
        while batch := await ledger.next_batch("billing_api", 500, now_ms=1):
            credits = [json.loads(w) for w in batch.wire]
            raw = json.dumps({"gateway": GW, "batch": batch.batch_key, "credits": credits}).encode()
            results += (await store.ingest(GW, batch.batch_key, raw, credits))["results"]
            await ledger.settle_batch(batch, now_ms=1)
        return results

    try:
        data = tmp_path / "gw"
        ledger = await Ledger.open(data, gateway_id=GW, keypair=KEY)
        await ledger.register_uplink("billing_api")
        await ledger.commit_readings(_readings(0, 121), now_ms=1)
        first = await deliver(ledger)
        await ledger.close()
        assert {(r["meter"], r["channel"]) for r in first} == {("m", "import"), ("m", "export"), ("plain", "import")}
        for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm"):  # the SD card died
            (data / name).unlink(missing_ok=True)

        async with serving(create_app(store, TOKEN)) as url:
            tips = await recovery.fetch_tips(url, TOKEN, GW, ["m", "plain", "new"], KEY.public_key)
        assert {(t.channel, t.seq) for t in tips["m"]} == {(Channel.IMPORT, 8), (Channel.EXPORT, 8)}
        assert [(t.channel, t.seq) for t in tips["plain"]] == [(Channel.IMPORT, 8)]
        assert tips["new"] == []
        assert "m export: continues after seq 8" in recovery.describe(tips["m"], "m")
        await recovery.create_recovered_ledger(data, GW, KEY, tips, now_ms=2)

        ledger = await Ledger.open(data, gateway_id=GW, keypair=KEY)
        try:
            assert ledger.meter_state("m", Channel.EXPORT).last_wh == 7_000 + 4 * 120
            await ledger.register_uplink("billing_api")
            await ledger.commit_readings(_readings(121, 241), now_ms=3)
            after = await deliver(ledger)
        finally:
            await ledger.close()
        assert after, "the recovered ledger made credits"
        assert {r["status"] for r in after} == {"accepted"}, [r for r in after if r["status"] != "accepted"]
        for meter, channel in (("m", "import"), ("m", "export"), ("plain", "import")):
            seqs = [r["seq"] for r in after if (r["meter"], r["channel"]) == (meter, channel)]
            assert seqs[0] == 9, f"{meter} {channel} goes on after its own tip"
        net = {(row["meter"], row["channel"]): row["wh"] for row in await store.summary(GW)}
        assert net[("m", "export")] == 4 * 240, "the export register counted once, the outage included"
        assert net[("m", "import")] == 9 * 240
    finally:
        await store.close()
