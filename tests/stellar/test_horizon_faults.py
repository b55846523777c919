"""Fault injection: each mode does what it says to the ledger, and is counted per path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from stellar_sdk import Asset, Keypair, ServerAsync, TransactionBuilder, TransactionEnvelope
from stellar_sdk.exceptions import BadRequestError, BadResponseError
from stellar_sdk.exceptions import ConnectionError as SdkConnectionError

from cloud_sync.horizon.faults import FaultMode, FaultPlan, FaultRule
from cloud_sync.horizon.ledger import LocalLedger
from cloud_sync.horizon.server import RunningLedger, serve_ledger
from cloud_sync.horizon_http import ThreadedRequestsClient
from gateway.clock import SystemClock
from tests.stellar.conftest import PASSPHRASE, XLM

TIMEOUT_S = 60


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[RunningLedger]:
    ledger = LocalLedger(tmp_path / "ledger", SystemClock())
    try:
        async with serve_ledger(ledger, faults=FaultPlan()) as run:
            yield run
    finally:
        ledger.close()


async def payment(running: RunningLedger) -> tuple[TransactionEnvelope, Keypair]:
    a, b = Keypair.random(), Keypair.random()
    for kp in (a, b):
        assert running.ledger.friendbot(kp.public_key).successful
    seq = running.ledger.account(a.public_key).account.seq_num
    from stellar_sdk import Account

    tx = TransactionBuilder(Account(a.public_key, seq), PASSPHRASE, base_fee=100).append_payment_op(
        b.public_key, Asset.native(), "5").set_timeout(TIMEOUT_S).build()
    tx.sign(a)
    return tx, b


def balance(running: RunningLedger, kp: Keypair) -> int:
    return running.ledger.account(kp.public_key).account.balance


async def test_504_after_applying_then_the_same_envelope_gets_the_stored_result(running: RunningLedger) -> None:
    running.faults.add(FaultRule("/transactions", (FaultMode.TIMEOUT_504_AFTER,), method="POST"))
    tx, b = await payment(running)
    async with ServerAsync(running.url, client=ThreadedRequestsClient()) as server:
        with pytest.raises(BadResponseError) as exc:
            await server.submit_transaction(tx)
        assert exc.value.status == 504
        assert exc.value.type == "https://stellar.org/horizon-errors/timeout"
        assert running.ledger.transaction(tx.hash_hex()) is not None  # it was applied all the same
        resp = await server.submit_transaction(tx)
        assert resp["hash"] == tx.hash_hex()
    assert balance(running, b) == 10_005 * XLM
    assert running.faults.count("/transactions", "504_after") == 1


async def test_503_and_429_answer_before_applying(running: RunningLedger) -> None:
    running.faults.add(FaultRule("/transactions", (FaultMode.UNAVAILABLE_503, FaultMode.RATE_LIMITED_429),
                                 retry_after_s=7))
    tx, b = await payment(running)
    async with httpx.AsyncClient() as client:
        first = await client.post(f"{running.url}/transactions", data={"tx": tx.to_xdr()})
        assert first.status_code == 503
        assert first.json()["type"].endswith("/server_over_capacity")
        assert running.ledger.transaction(tx.hash_hex()) is None
        second = await client.post(f"{running.url}/transactions", data={"tx": tx.to_xdr()})
        assert second.status_code == 429
        assert second.headers["retry-after"] == "7"
        assert running.ledger.transaction(tx.hash_hex()) is None
        assert balance(running, b) == 10_000 * XLM
        third = await client.post(f"{running.url}/transactions", data={"tx": tx.to_xdr()})
        assert third.status_code == 200
    assert balance(running, b) == 10_005 * XLM


async def test_429_reaches_the_sdk_as_a_bad_request_with_its_retry_after(running: RunningLedger) -> None:
    running.faults.add(FaultRule("/transactions", (FaultMode.RATE_LIMITED_429,), retry_after_s=3))
    tx, _ = await payment(running)
    async with ServerAsync(running.url, client=ThreadedRequestsClient()) as server:
        with pytest.raises(BadRequestError) as exc:
            await server.submit_transaction(tx)
    assert exc.value.status == 429
    # The SDK keeps the response (headers included) as the exception's first argument.
    assert exc.value.args[0].headers["retry-after"] == "3"


async def test_reset_after_applying_loses_the_answer_not_the_transaction(running: RunningLedger) -> None:
    running.faults.add(FaultRule("/transactions", (FaultMode.RESET_AFTER,)))
    tx, b = await payment(running)
    async with ServerAsync(running.url, client=ThreadedRequestsClient()) as server:
        with pytest.raises(SdkConnectionError):
            await server.submit_transaction(tx)
        assert balance(running, b) == 10_005 * XLM
        resp = await server.submit_transaction(tx)
        assert resp["successful"] is True
    assert balance(running, b) == 10_005 * XLM
    assert running.faults.count("/transactions", FaultMode.RESET_AFTER) == 1


async def test_reset_before_applying(running: RunningLedger) -> None:
    running.faults.add(FaultRule("/transactions", (FaultMode.RESET_BEFORE,)))
    tx, b = await payment(running)
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.TransportError):
            await client.post(f"{running.url}/transactions", data={"tx": tx.to_xdr()})
    assert running.ledger.transaction(tx.hash_hex()) is None
    assert balance(running, b) == 10_000 * XLM


async def test_faults_are_counted_per_path_and_configurable_at_run_time(running: RunningLedger) -> None:
    async with httpx.AsyncClient() as client:
        rule = {"path": "/accounts/*", "modes": ["503", "ok"], "repeat": True, "method": "GET"}
        assert (await client.post(f"{running.url}/_ledger/faults", json=rule)).status_code == 200
        root = running.ledger.root.public_key
        statuses = [(await client.get(f"{running.url}/accounts/{root}")).status_code for _ in range(4)]
        assert statuses == [503, 200, 503, 200]
        assert (await client.get(f"{running.url}/fee_stats")).status_code == 200
        snap = (await client.get(f"{running.url}/_ledger/faults")).json()
        assert snap["delivered"] == {f"/accounts/{root}": {"503": 2}}
        assert snap["seen"][f"/accounts/{root}"] == 4
        assert snap["seen"]["/fee_stats"] == 1
        await client.delete(f"{running.url}/_ledger/faults")
        assert (await client.get(f"{running.url}/accounts/{root}")).status_code == 200
        bad = await client.post(f"{running.url}/_ledger/faults", json={"path": "/x", "modes": ["explode"]})
        assert bad.status_code == 400
        assert "unknown fault mode" in bad.json()["extras"]["reason"]


def test_fault_rules_from_json_are_checked() -> None:
    rule = FaultRule.from_json({"path": "/transactions", "modes": ["504_after", "ok", "reset_after"]})
    assert rule.modes == (FaultMode.TIMEOUT_504_AFTER, FaultMode.OK, FaultMode.RESET_AFTER)
    plan = FaultPlan([rule])
    got = [plan.next_fault("POST", "/transactions")[0] for _ in range(4)]
    assert got == [FaultMode.TIMEOUT_504_AFTER, FaultMode.OK, FaultMode.RESET_AFTER, FaultMode.OK]
    for bad in ({"modes": ["503"]}, {"path": "/t"}, {"path": "/t", "modes": []}, {"path": "/t", "modes": ["503"],
                                                                                  "retry_after_s": -1}):
        with pytest.raises(ValueError):  # noqa: PT011 - each message is checked by the admin test above
            FaultRule.from_json(bad)
