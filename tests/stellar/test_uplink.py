"""The Stellar uplink against the local ledger: every credit paid to its meter's account exactly once."""

from __future__ import annotations

import base64
from pathlib import Path

from stellar_sdk import TransactionEnvelope

from cloud_sync.stellar.txbuild import batch_memo
from tests.stellar.gateway_harness import T0, assert_exact, readings, records, run_until, tenant


async def test_a_backlog_is_paid_in_batches_of_100_with_the_batch_hash_as_memo(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        for meter in ("m1", "m2", "m3"):
            await t.ledger.commit_readings(readings(meter, 80), now_ms=1)
        uplink = t.uplink(["m1", "m2", "m3"])
        await run_until(uplink, t.settled)
        balances = await assert_exact(t)
        assert balances == {m: 80 * 105 * t.per_wh for m in ("m1", "m2", "m3")}
        txs = [tx for tx in await records(t.url, f"/accounts/{t.keypair.public_key}/transactions")
               if tx.get("memo_type") == "hash"]
        assert [tx["operation_count"] for tx in txs] == [100, 100, 40]
        credit_hashes = [str(h) for (h,) in await t.ledger.read_rows("SELECT hash FROM credits ORDER BY id")]
        assert base64.b64decode(txs[0]["memo"]) == batch_memo(credit_hashes[:100])
        env = TransactionEnvelope.from_xdr(txs[0]["envelope_xdr"], t.cfg.network_passphrase).transaction
        assert env.preconditions is not None and env.preconditions.ledger_bounds is not None
        assert env.preconditions.ledger_bounds.max_ledger > 0 and env.preconditions.time_bounds.max_time > 0
        assert uplink.status.accounts["m1"].state == "active"


async def test_nothing_is_paid_before_the_meters_account_exists(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        await t.ledger.commit_readings(readings("m1", 3), now_ms=1)
        waits: list[str] = []

        async def no_serial(meter: str) -> str:
            from cloud_sync.stellar.provision import SerialUnavailable

            waits.append(meter)
            raise SerialUnavailable("meter m1 did not answer")

        uplink = t.uplink(["m1"], serials=no_serial)
        try:
            await run_until(uplink, t.settled, timeout_s=1.5)
        except AssertionError:
            pass
        assert waits and uplink.status.waiting_for == "m1"
        assert "stellar_account:m1" in t.alarms and "did not answer" in t.alarms["stellar_account:m1"]
        assert (await t.ledger.uplink_summary("stellar")).backlog == 3
        await run_until(t.uplink(["m1"]), t.settled)
        await assert_exact(t)
        assert T0  # the credits' time base is shared with the harness
