"""The unmodified stellar-sdk against the local ledger over real HTTP: Server and ServerAsync (both over requests)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import pytest
import requests
from stellar_sdk import Asset, Keypair, Server, ServerAsync, Signer, TransactionBuilder, TransactionEnvelope, xdr
from stellar_sdk.exceptions import BadRequestError, NotFoundError
from stellar_sdk.exceptions import ConnectionError as SdkConnectionError

from cloud_sync.horizon.ledger import LocalLedger
from cloud_sync.horizon.server import serve_ledger
from cloud_sync.horizon_http import ThreadedRequestsClient
from gateway.clock import SystemClock
from gateway.web.server import free_port
from tests.stellar.conftest import PASSPHRASE, ThreadedLedger

TIMEOUT_S = 60
"""Validity window of test transactions: far more than a test takes, far less than forever."""


def fund(url: str) -> Keypair:
    kp = Keypair.random()
    resp = requests.get(f"{url}/friendbot", params={"addr": kp.public_key}, timeout=10)
    assert resp.status_code == 200, resp.text
    return kp


def refusal(exc: BadRequestError) -> tuple[str, list[str]]:
    """Horizon's result codes, checked against the result XDR they claim to describe."""
    assert exc.status == 400
    assert exc.type == "https://stellar.org/horizon-errors/transaction_failed"
    codes = exc.extras["result_codes"]
    parsed = xdr.TransactionResult.from_xdr(exc.result_xdr)
    assert codes["transaction"] == {
        xdr.TransactionResultCode.txFAILED: "tx_failed", xdr.TransactionResultCode.txBAD_AUTH: "tx_bad_auth",
        xdr.TransactionResultCode.txBAD_SEQ: "tx_bad_seq", xdr.TransactionResultCode.txTOO_LATE: "tx_too_late",
    }[parsed.result.code]
    return codes["transaction"], codes.get("operations", [])


def test_server_loads_submits_and_reads_back(horizon: ThreadedLedger) -> None:
    server = Server(horizon.url)
    assert server.root().call()["network_passphrase"] == PASSPHRASE
    assert server.fetch_base_fee() == 100
    a, b = fund(horizon.url), Keypair.random()
    account = server.load_account(a.public_key)
    tx = (TransactionBuilder(account, PASSPHRASE, base_fee=100)
          .append_create_account_op(b.public_key, "3")
          .append_change_trust_op(Asset("KWH", a.public_key), source=b.public_key)
          .append_manage_data_op("serial", b"SN-42", source=b.public_key)
          .append_set_options_op(master_weight=0, signer=Signer.ed25519_public_key(a.public_key, 1),
                                 source=b.public_key)
          .append_payment_op(b.public_key, Asset("KWH", a.public_key), "1.2345678")
          .add_text_memo("batch 1").set_timeout(TIMEOUT_S).build())
    tx.sign(a)
    tx.sign(b)
    resp = server.submit_transaction(tx)
    assert resp["successful"] is True
    assert resp["hash"] == tx.hash_hex()
    assert resp["fee_charged"] == "500"
    assert resp["operation_count"] == 5
    assert resp["memo_type"] == "text"
    assert resp["memo"] == "batch 1"

    acc = server.accounts().account_id(b.public_key).call()
    assert acc["sequence"] == str(resp["ledger"] << 32)
    assert acc["subentry_count"] == 3
    assert acc["thresholds"] == {"low_threshold": 0, "med_threshold": 0, "high_threshold": 0}
    assert acc["flags"]["auth_required"] is False
    assert acc["data"] == {"serial": base64.b64encode(b"SN-42").decode()}
    assert acc["num_sponsoring"] == 0
    assert acc["num_sponsored"] == 0
    credit, native = acc["balances"]
    assert credit["asset_code"] == "KWH"
    assert credit["balance"] == "1.2345678"
    assert credit["asset_issuer"] == a.public_key
    assert native == {"balance": "3.0000000", "buying_liabilities": "0.0000000",
                      "selling_liabilities": "0.0000000", "asset_type": "native"}
    assert {(s["key"], s["weight"]) for s in acc["signers"]} == {(a.public_key, 1), (b.public_key, 0)}
    assert server.load_account(b.public_key).sequence == resp["ledger"] << 32

    got = server.transactions().transaction(tx.hash_hex()).call()
    assert got["ledger"] == resp["ledger"]
    assert got["envelope_xdr"] == tx.to_xdr()
    assert got["source_account_sequence"] == str(tx.transaction.sequence)
    latest = server.ledgers().order(desc=True).limit(1).call()["_embedded"]["records"][0]
    assert latest["base_fee_in_stroops"] == 100
    assert latest["base_reserve_in_stroops"] == 5_000_000
    assert isinstance(latest["sequence"], int)
    assert latest["closed_at"].endswith("Z")
    stats = server.fee_stats().call()
    assert stats["last_ledger_base_fee"] == "100"
    with pytest.raises(NotFoundError):
        server.transactions().transaction("00" * 32).call()
    with pytest.raises(NotFoundError):
        server.load_account(Keypair.random().public_key)


def test_server_refuses_with_horizon_codes(horizon: ThreadedLedger) -> None:
    server = Server(horizon.url)
    a, issuer = fund(horizon.url), fund(horizon.url)

    def build() -> TransactionBuilder:
        return TransactionBuilder(server.load_account(a.public_key), PASSPHRASE, base_fee=100)

    tx = build().append_payment_op(issuer.public_key, Asset.native(), "1").set_timeout(TIMEOUT_S).build()
    tx.sign(Keypair.random())
    with pytest.raises(BadRequestError) as bad_auth:
        server.submit_transaction(tx)
    assert refusal(bad_auth.value) == ("tx_bad_auth", [])

    stale = server.load_account(a.public_key)
    stale.sequence += 5
    tx = TransactionBuilder(stale, PASSPHRASE, base_fee=100).append_payment_op(
        issuer.public_key, Asset.native(), "1").set_timeout(TIMEOUT_S).build()
    tx.sign(a)
    with pytest.raises(BadRequestError) as bad_seq:
        server.submit_transaction(tx)
    assert refusal(bad_seq.value) == ("tx_bad_seq", [])

    tx = build().append_payment_op(issuer.public_key, Asset.native(), "1").add_time_bounds(
        0, int(time.time()) - 10).build()
    tx.sign(a)
    with pytest.raises(BadRequestError) as too_late:
        server.submit_transaction(tx)
    assert refusal(too_late.value) == ("tx_too_late", [])

    tx = build().append_payment_op(issuer.public_key, Asset.native(), "20000").set_timeout(TIMEOUT_S).build()
    tx.sign(a)
    with pytest.raises(BadRequestError) as underfunded:
        server.submit_transaction(tx)
    assert refusal(underfunded.value) == ("tx_failed", ["op_underfunded"])

    tx = build().append_payment_op(issuer.public_key, Asset("KWH", a.public_key), "5").set_timeout(
        TIMEOUT_S).build()
    tx.sign(a)
    with pytest.raises(BadRequestError) as no_trust:
        server.submit_transaction(tx)
    assert refusal(no_trust.value) == ("tx_failed", ["op_no_trust"])

    tx = build().append_create_account_op(Keypair.random().public_key, "0.5").set_timeout(TIMEOUT_S).build()
    tx.sign(a)
    with pytest.raises(BadRequestError) as low_reserve:
        server.submit_transaction(tx)
    assert refusal(low_reserve.value) == ("tx_failed", ["op_low_reserve"])


def test_resubmitting_the_same_envelope_returns_the_original_result(horizon: ThreadedLedger) -> None:
    server = Server(horizon.url)
    a, b = fund(horizon.url), fund(horizon.url)
    tx = TransactionBuilder(server.load_account(a.public_key), PASSPHRASE, base_fee=100).append_payment_op(
        b.public_key, Asset.native(), "25").set_timeout(TIMEOUT_S).build()
    tx.sign(a)
    first = server.submit_transaction(tx)
    second = server.submit_transaction(TransactionEnvelope.from_xdr(tx.to_xdr(), PASSPHRASE))
    assert (second["hash"], second["ledger"], second["result_xdr"]) == (first["hash"], first["ledger"],
                                                                        first["result_xdr"])
    assert server.accounts().account_id(b.public_key).call()["balances"][-1]["balance"] == "10025.0000000"
    failing = TransactionBuilder(server.load_account(a.public_key), PASSPHRASE, base_fee=100).append_payment_op(
        b.public_key, Asset.native(), "999999").set_timeout(TIMEOUT_S).build()
    failing.sign(a)
    results = []
    for _ in range(2):
        with pytest.raises(BadRequestError) as exc:
            server.submit_transaction(failing)
        results.append(exc.value.result_xdr)
    assert results[0] == results[1]
    assert server.transactions().transaction(failing.hash_hex()).call()["successful"] is False


def test_every_payment_to_an_account_can_be_paged_and_counted(horizon: ThreadedLedger) -> None:
    server = Server(horizon.url)
    a, b = fund(horizon.url), fund(horizon.url)
    tx = TransactionBuilder(server.load_account(a.public_key), PASSPHRASE, base_fee=100)
    for i in range(7):
        tx.append_payment_op(b.public_key, Asset.native(), f"{i + 1}")
    env = tx.set_timeout(TIMEOUT_S).build()
    env.sign(a)
    server.submit_transaction(env, skip_memo_required_check=True)
    seen: list[str] = []
    page = server.payments().for_account(b.public_key).limit(3).call()
    while page["_embedded"]["records"]:
        seen += [r["amount"] for r in page["_embedded"]["records"] if r["type"] == "payment"]
        page = requests.get(page["_links"]["next"]["href"], timeout=10).json()
    assert seen == [f"{i + 1}.0000000" for i in range(7)]
    desc = server.payments().for_account(b.public_key).order(desc=True).limit(200).call()["_embedded"]["records"]
    assert [r["type"] for r in desc][-1] == "create_account"
    txs = server.transactions().for_account(b.public_key).call()["_embedded"]["records"]
    assert [t["hash"] for t in txs][-1] == env.hash_hex()
    ops = server.operations().for_transaction(env.hash_hex()).limit(200).call()["_embedded"]["records"]
    assert len(ops) == 7
    assert ops[0]["from"] == a.public_key


def test_transactions_async_and_malformed_envelopes(horizon: ThreadedLedger) -> None:
    server = Server(horizon.url)
    a, b = fund(horizon.url), fund(horizon.url)
    tx = TransactionBuilder(server.load_account(a.public_key), PASSPHRASE, base_fee=100).append_payment_op(
        b.public_key, Asset.native(), "1").set_timeout(TIMEOUT_S).build()
    tx.sign(a)
    assert server.submit_transaction_async(tx) == {"tx_status": "PENDING", "hash": tx.hash_hex()}
    with pytest.raises(BadRequestError) as dup:
        server.submit_transaction_async(tx)
    assert dup.value.status == 409
    bad = TransactionBuilder(server.load_account(a.public_key), PASSPHRASE, base_fee=100).append_payment_op(
        b.public_key, Asset.native(), "1").set_timeout(TIMEOUT_S).build()
    bad.sign(b)
    with pytest.raises(BadRequestError) as error:
        server.submit_transaction_async(bad)
    body = json.loads(error.value.message)
    assert body["tx_status"] == "ERROR"
    assert xdr.TransactionResult.from_xdr(body["error_result_xdr"]).result.code == xdr.TransactionResultCode.txBAD_AUTH
    resp = requests.post(f"{horizon.url}/transactions", data={"tx": "AAAA"}, timeout=10)
    assert resp.status_code == 400
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["type"] == "https://stellar.org/horizon-errors/transaction_malformed"
    missing = requests.get(f"{horizon.url}/no/such/thing", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["title"] == "Resource Missing"


async def test_server_async_over_the_threaded_requests_client(tmp_path: Path) -> None:
    ledger = LocalLedger(tmp_path / "ledger", SystemClock())
    try:
        async with serve_ledger(ledger) as running, ServerAsync(running.url, client=ThreadedRequestsClient()) as server:
            a, b = Keypair.random(), Keypair.random()
            async with httpx.AsyncClient() as client:
                for kp in (a, b):
                    assert (await client.get(f"{running.url}/friendbot", params={"addr": kp.public_key})).is_success
            account = await server.load_account(a.public_key)
            tx = TransactionBuilder(account, PASSPHRASE, base_fee=await server.fetch_base_fee()).append_payment_op(
                b.public_key, Asset.native(), "2.5").set_timeout(TIMEOUT_S).build()
            tx.sign(a)
            resp = await server.submit_transaction(tx)
            assert resp["successful"] is True
            again = await server.submit_transaction(tx)  # the stored result, not tx_bad_seq
            assert again["ledger"] == resp["ledger"]
            got = await server.accounts().account_id(b.public_key).call()
            assert got["balances"][-1]["balance"] == "10002.5000000"
            bad = TransactionBuilder(await server.load_account(a.public_key), PASSPHRASE, base_fee=100) \
                .append_payment_op(b.public_key, Asset.native(), "1").set_timeout(TIMEOUT_S).build()
            bad.sign(b)
            with pytest.raises(BadRequestError) as exc:
                await server.submit_transaction(bad)
            assert refusal(exc.value) == ("tx_bad_auth", [])
            with pytest.raises(NotFoundError):
                await server.load_account(Keypair.random().public_key)
    finally:
        ledger.close()


async def test_the_adapter_enforces_the_sdks_content_size_limit(tmp_path: Path) -> None:
    from stellar_sdk.exceptions import ContentSizeLimitExceededError

    ledger = LocalLedger(tmp_path / "ledger", SystemClock())
    client = ThreadedRequestsClient()
    try:
        async with serve_ledger(ledger) as running:
            small = await client.get(f"{running.url}/fee_stats", max_content_size=100_000)
            assert small.status_code == 200
            assert small.json()["last_ledger_base_fee"] == "100"
            with pytest.raises(ContentSizeLimitExceededError):
                await client.get(f"{running.url}/fee_stats", max_content_size=100)
    finally:
        await client.close()
        ledger.close()


async def test_server_async_connection_errors_are_the_sdks() -> None:
    async with ServerAsync(f"http://127.0.0.1:{free_port()}", client=ThreadedRequestsClient()) as nowhere:
        with pytest.raises(SdkConnectionError):
            await nowhere.root().call()
        a = Keypair.random()
        from stellar_sdk import Account

        tx = TransactionBuilder(Account(a.public_key, 1), PASSPHRASE, base_fee=100).append_bump_sequence_op(
            5).set_timeout(TIMEOUT_S).build()
        with pytest.raises(SdkConnectionError):
            await nowhere.submit_transaction(tx, skip_memo_required_check=True)


def test_sponsorship_signer_listing_and_data_in_horizon_shapes(horizon: ThreadedLedger) -> None:
    server = Server(horizon.url)
    sponsor, platform, meter = fund(horizon.url), Keypair.random(), Keypair.random()
    tx = (TransactionBuilder(server.load_account(sponsor.public_key), PASSPHRASE, base_fee=100)
          .append_begin_sponsoring_future_reserves_op(meter.public_key)
          .append_create_account_op(meter.public_key, "0")
          .append_change_trust_op(Asset("KWH", sponsor.public_key), source=meter.public_key)
          .append_manage_data_op("serial", b"SDM630-0042", source=meter.public_key)
          .append_set_options_op(master_weight=0, signer=Signer.ed25519_public_key(platform.public_key, 1),
                                 source=meter.public_key)
          .append_end_sponsoring_future_reserves_op(source=meter.public_key)
          .set_timeout(TIMEOUT_S).build())
    tx.sign(sponsor)
    tx.sign(meter)
    server.submit_transaction(tx)
    acc = server.accounts().account_id(meter.public_key).call()
    assert acc["sponsor"] == sponsor.public_key
    assert (acc["num_sponsored"], acc["subentry_count"]) == (5, 3)
    assert acc["balances"][0]["sponsor"] == sponsor.public_key
    assert [s.get("sponsor") for s in acc["signers"]] == [sponsor.public_key, None]
    assert server.accounts().account_id(sponsor.public_key).call()["num_sponsoring"] == 5
    listed = server.accounts().for_signer(platform.public_key).call()["_embedded"]["records"]
    assert [a["id"] for a in listed] == [meter.public_key]
    held = server.accounts().for_asset(Asset("KWH", sponsor.public_key)).call()["_embedded"]["records"]
    assert [a["id"] for a in held] == [meter.public_key]
    data = server.data(meter.public_key, "serial").call()
    assert base64.b64decode(data["value"]) == b"SDM630-0042"
    assert data["sponsor"] == sponsor.public_key
