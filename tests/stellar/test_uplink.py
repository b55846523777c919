"""The Stellar uplink against the local ledger: every credit paid to its meter's account exactly once."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from pathlib import Path

from stellar_sdk import Account, TransactionBuilder, TransactionEnvelope

from cloud_sync.billing_api import BillingApiUplink
from cloud_sync.horizon.faults import FaultMode, FaultRule
from cloud_sync.receiver import ReceiverStore, create_app
from cloud_sync.stellar.store import StellarStore
from cloud_sync.stellar.txbuild import batch_memo
from gateway.clock import SystemClock
from gateway.config import BillingApiConfig
from gateway.intervals import Reading
from gateway.sim.utility import top_up
from gateway.web.server import serving
from tests.conftest import free_port
from tests.stellar.gateway_harness import GW, T0, assert_exact, asset_balance, readings, records, run_until, tenant


async def test_a_backlog_is_paid_in_batches_of_100_with_the_batch_hash_as_memo(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        for meter in ("m1", "m2", "m3"):
            await t.ledger.commit_readings(readings(meter, 80), now_ms=1)
        uplink = t.uplink(["m1", "m2", "m3"])
        await run_until(uplink, t.settled)
        balances = await assert_exact(t)
        assert balances == dict.fromkeys(("m1", "m2", "m3"), 80 * 105 * t.per_wh)
        txs = [tx for tx in await records(t.url, f"/accounts/{t.keypair.public_key}/transactions")
               if tx.get("memo_type") == "hash"]
        assert [tx["operation_count"] for tx in txs] == [100, 100, 40]
        credit_hashes = [str(h) for (h,) in await t.ledger.read_rows("SELECT hash FROM credits ORDER BY id")]
        assert base64.b64decode(txs[0]["memo"]) == batch_memo(credit_hashes[:100])
        env = TransactionEnvelope.from_xdr(txs[0]["envelope_xdr"], t.cfg.network_passphrase).transaction
        assert env.preconditions is not None
        assert env.preconditions.ledger_bounds is not None
        assert env.preconditions.ledger_bounds.max_ledger > 0
        assert env.preconditions.time_bounds.max_time > 0
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
        with contextlib.suppress(AssertionError):
            await run_until(uplink, t.settled, timeout_s=1.5)
        assert waits
        assert uplink.status.waiting_for == "m1"
        assert "stellar_account:m1" in t.alarms
        assert "did not answer" in t.alarms["stellar_account:m1"]
        assert (await t.ledger.uplink_summary("stellar")).backlog == 3
        await run_until(t.uplink(["m1"]), t.settled)
        await assert_exact(t)
        assert T0  # the credits' time base is shared with the harness


async def test_horizon_faults_neither_lose_nor_double_a_payment(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        for meter in ("m1", "m2"):
            await t.ledger.commit_readings(readings(meter, 120), now_ms=1)
        # Every submission meets a fault first: applied but the answer lost (504, reset), or not applied (503, 429).
        t.running.faults.add(FaultRule("/transactions", (FaultMode.TIMEOUT_504_AFTER, FaultMode.OK,
                                                         FaultMode.UNAVAILABLE_503, FaultMode.RESET_AFTER,
                                                         FaultMode.RATE_LIMITED_429, FaultMode.OK),
                                       method="POST", repeat=True, retry_after_s=1))
        t.running.faults.add(FaultRule("/accounts/*", (FaultMode.UNAVAILABLE_503, FaultMode.OK, FaultMode.OK),
                                       method="GET", repeat=True))
        await run_until(t.uplink(["m1", "m2"]), t.settled)
        t.running.faults.clear()
        await assert_exact(t)
        for mode in ("504_after", "503", "reset_after", "429"):
            assert t.running.faults.count("/transactions", mode) >= 1, mode
        assert t.running.faults.count("/transactions", "504_after") + \
            t.running.faults.count("/transactions", "reset_after") >= 2, "answers lost after applying"


async def test_tx_bad_seq_from_another_transaction_on_the_gateway_account(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        await t.ledger.commit_readings(readings("m1", 2), now_ms=1)
        await run_until(t.uplink(["m1"]), t.settled)
        # The next envelope is stored, then held up (429, 2 s); meanwhile someone else with the gateway key
        # uses its next sequence number. Resending the stored bytes now gets tx_bad_seq.
        t.running.faults.add(FaultRule("/transactions", (FaultMode.RATE_LIMITED_429,), method="POST",
                                       retry_after_s=2))
        await t.ledger.commit_readings(readings("m1", 6, t0=T0 + 2 * 900_000, start_wh=10_210)[1:], now_ms=2)
        uplink = t.uplink(["m1"])

        async def interloper() -> None:
            while t.running.faults.count("/transactions", "429") < 1:
                await asyncio.sleep(0.02)
            seq = t.running.ledger.account(t.keypair.public_key).account.seq_num
            tx = (TransactionBuilder(Account(t.keypair.public_key, seq), t.cfg.network_passphrase, base_fee=100)
                  .append_bump_sequence_op(seq + 1).set_timeout(60).build())
            tx.sign(t.keypair)
            assert t.running.ledger.submit(tx.to_xdr()).successful

        other = asyncio.create_task(interloper())
        await run_until(uplink, t.settled)
        await other
        await assert_exact(t)
        results = [json.loads(r) for (r,) in await t.ledger.read_rows(
            "SELECT result FROM stellar_txs WHERE state='void'")]
        assert [r["transaction"] for r in results] == ["tx_bad_seq"], "the stale envelope was proved void, then rebuilt"


async def test_the_ledger_restarted_mid_run(tmp_path: Path) -> None:
    async with tenant(tmp_path, port=free_port()) as t:
        await t.ledger.commit_readings(readings("m1", 2), now_ms=1)
        await run_until(t.uplink(["m1"]), t.settled)
        await t.ledger.commit_readings(readings("m1", 150, t0=T0 + 2 * 900_000, start_wh=10_210)[1:], now_ms=2)
        # Answers are lost after applying, so the uplink is resending when the ledger goes away.
        t.running.faults.add(FaultRule("/transactions", (FaultMode.TIMEOUT_504_AFTER,) * 3, method="POST"))
        task = asyncio.create_task(run_until(t.uplink(["m1"]), t.settled))
        while t.running.faults.count("/transactions", "504_after") < 2:
            await asyncio.sleep(0.01)
        await t.server.stop()
        await asyncio.sleep(1.0)  # the uplink meets a closed port meanwhile
        await t.server.start()
        await task
        await assert_exact(t)
        assert (await t.credits())["m1"][1] == 152


async def test_a_negative_correction_is_paid_back_from_the_meters_account(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        # Readings 45 min apart: the two boundaries between are interpolated, credited and paid.
        await t.ledger.commit_readings([Reading("m1", T0, 10_000), Reading("m1", T0 + 2_700_000, 10_450)], now_ms=1)
        await run_until(t.uplink(["m1"]), t.settled)
        assert (await assert_exact(t))["m1"] == 450 * t.per_wh
        # A late reading moves the boundaries: +150 Wh for the first interval, -75 Wh for the next two.
        result = await t.ledger.commit_readings([Reading("m1", T0 + 900_000, 10_300)], now_ms=2)
        assert result.corrections == 3
        await run_until(t.uplink(["m1"]), t.settled)
        credits = await t.credits()
        assert credits["m1"] == (450, 4, 2)
        await assert_exact(t)


async def test_an_exhausted_allowance_is_dead_lettered_with_what_to_do(tmp_path: Path) -> None:
    async with tenant(tmp_path, allowance="0.5", limit="100") as t:
        await t.ledger.commit_readings(readings("m1", 10), now_ms=1)  # 1050 Wh = 1.05 KWH > 0.5
        uplink = t.uplink(["m1"])

        async def dead() -> bool:
            # Both: the ledger's commit wakes this poll before the uplink, back from it, raises the alarm.
            return (await t.ledger.uplink_summary("stellar")).dead_credits > 0 and "stellar" in t.alarms

        await run_until(uplink, dead)
        alarm = t.alarms["stellar"]
        assert "top up the gateway account's allowance" in alarm, alarm
        assert t.keypair.public_key in alarm
        summary = await t.ledger.uplink_summary("stellar")
        assert summary.dead_credits == 10
        assert "allowance" in (summary.last_error or "")
        assert await asset_balance(t.url, (await t.accounts())["m1"], t.cfg.asset_code, t.cfg.asset_issuer) == 0
        await top_up(t.utility, t.url, t.cfg.network_passphrase, t.keypair.public_key, "1")
        await run_until(uplink, t.settled)
        await assert_exact(t)
        assert "stellar" not in t.alarms


async def test_either_uplink_can_be_down_without_holding_the_other(tmp_path: Path) -> None:
    async with tenant(tmp_path, port=free_port()) as t:
        await t.ledger.commit_readings(readings("m1", 30), now_ms=1)
        api_port = free_port()
        billing = BillingApiUplink(
            BillingApiConfig(url=f"http://127.0.0.1:{api_port}", batch_size=10, max_batch_age_s=0, timeout_s=1,
                             backoff_max_s=1), t.ledger, SystemClock(), gateway_id=GW, token="secret",
            wakeup=asyncio.Event)
        billing_task = asyncio.create_task(billing.run())
        try:
            # The billing API is down (nothing listens): Stellar pays everything all the same.
            await run_until(t.uplink(["m1"]), t.settled)
            assert (await t.ledger.uplink_summary("billing_api")).backlog == 30
            # Now the ledger is down: the billing API, back, gets everything, new credits too.
            await t.server.stop()
            await t.ledger.commit_readings(readings("m1", 10, t0=T0 + 30 * 900_000, start_wh=13_150)[1:], now_ms=2)
            stellar_task = asyncio.create_task(t.uplink(["m1"]).run())
            store = ReceiverStore(tmp_path / "receiver.db", {GW: t.keypair.public_key})
            try:
                async with serving(create_app(store, "secret"), port=api_port):
                    async with asyncio.timeout(30):
                        while (await t.ledger.uplink_summary("billing_api")).backlog:
                            await asyncio.sleep(0.05)
            finally:
                store.close()
            assert (await t.ledger.uplink_summary("stellar")).backlog == 10
            await t.server.start()
            async with asyncio.timeout(30):
                while not await t.settled():
                    await asyncio.sleep(0.05)
            stellar_task.cancel()
            await asyncio.gather(stellar_task, return_exceptions=True)
            await assert_exact(t)
        finally:
            billing_task.cancel()
            await asyncio.gather(billing_task, return_exceptions=True)


async def test_a_credit_in_a_stellar_batch_is_never_revised_only_corrected(tmp_path: Path) -> None:
    async with tenant(tmp_path) as t:
        await t.ledger.commit_readings([Reading("m1", T0, 10_000), Reading("m1", T0 + 2_700_000, 10_450)], now_ms=1)
        store = StellarStore(t.ledger)
        batch, _ = await store.next_batch({"m1": "G-not-yet-paid"}, now_ms=2)  # fixed, payments not even built
        assert batch is not None
        assert [c.wh for c in batch.credits] == [150, 150, 150]
        result = await t.ledger.commit_readings([Reading("m1", T0 + 900_000, 10_300)], now_ms=3)
        assert (result.revised, result.corrections) == (0, 3), "the batch's credits may already be on their way"
        rows = await t.ledger.read_rows("SELECT wh FROM credits WHERE id BETWEEN ? AND ? ORDER BY id",
                                        (batch.first_id, batch.last_id))
        assert [w for (w,) in rows] == [150, 150, 150]
