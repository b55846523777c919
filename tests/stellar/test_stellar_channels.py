"""The Stellar uplink pays import credits only: an export Wh (fed in) is never paid as consumption.

Import and export credits of the same meters are interleaved in the outbox; the uplink must pay
every import credit once, to the stroop, and pass over every export credit (none is a payment,
none is in a batch memo), and an outbox stretch of export credits alone must not hold it up.
"""

from __future__ import annotations

import base64
from pathlib import Path

from cloud_sync.stellar.txbuild import batch_memo
from gateway.channels import Channel
from tests.stellar.gateway_harness import assert_exact, readings, records, run_until, tenant


async def test_export_credits_are_never_paid(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        # An export-only stretch first (m1's panels, committed ahead), then both channels interleaved.
        await t.ledger.commit_readings(readings("m1", 80, start_wh=500, per_min=30, channel=Channel.EXPORT), now_ms=1)
        both = [*readings("m1", 80), *readings("m2", 80), *readings("m2", 80, start_wh=900, per_min=11,
                                                                      channel=Channel.EXPORT)]
        await t.ledger.commit_readings(sorted(both, key=lambda r: r.t_ms), now_ms=2)
        exports = await t.ledger.read_rows("SELECT COUNT(*), MIN(id) FROM credits WHERE channel = 'export'")
        assert exports[0] == (160, 1)
        uplink = t.uplink(["m1", "m2"])
        await run_until(uplink, t.settled)
        balances = await assert_exact(t)  # balance = import Wh × rate, one payment per import credit
        assert balances == dict.fromkeys(("m1", "m2"), 80 * 105 * t.per_wh), "no export Wh was paid"
        assert (await t.ledger.uplink_summary("stellar")).backlog == 0, "export credits do not hold the outbox up"
        imports = [str(h) for (h,) in await t.ledger.read_rows(
            "SELECT hash FROM credits WHERE channel = 'import' ORDER BY id")]
        txs = [tx for tx in await records(t.url, f"/accounts/{t.keypair.public_key}/transactions")
               if tx.get("memo_type") == "hash" and tx["successful"]]
        assert sum(tx["operation_count"] for tx in txs) == len(imports)
        memos = [base64.b64decode(tx["memo"]) for tx in txs]
        assert memos == [batch_memo(imports[:100]), batch_memo(imports[100:])], \
            "each batch's memo covers its import credits only"
