"""Enrolment in the store: per-gateway tokens (stored hashed), one gateway per token, revocation.

Each test runs against both stores. The revocation test drives the real gateway uplink
(``BillingApiUplink``) against the receiver over HTTP: a revoked gateway's next batch is refused
with a 403 naming the reason, and the box dead-letters it (kept, shown, offered again slowly).
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import asyncpg
import httpx
from receiver_kit import CREDITS_PATH, GW, Client, batch_bytes, honest_chain, resign
from stellar_sdk import Keypair

from cloud_sync.billing_api import NAME, BillingApiUplink
from cloud_sync.receiver import CreditStore, create_app
from cloud_sync.receiver.enrolment import new_token, token_digest
from gateway.clock import SystemClock
from gateway.config import BillingApiConfig
from gateway.intervals import Reading
from gateway.ledger.store import Ledger, UplinkSummary
from gateway.web.server import serving

OTHER = "gw-2"
OTHER_KEY = Keypair.from_raw_ed25519_seed(bytes(range(2, 34)))
T0_MS = 1_767_225_600_000
UNTIL_S = 20.0
"""The uplink delivers or refuses a batch within milliseconds; this bounds a stuck test."""


async def _enrol(store: CreditStore, gateway: str, key: str) -> str:
    token = new_token()
    await store.enrol(gateway, key, token_digest(token), 1)
    return token


async def test_a_gateway_token_is_that_gateway_and_no_other(backend: CreditStore) -> None:
    own = await _enrol(backend, OTHER, OTHER_KEY.public_key)
    chain = honest_chain(2)  # gw-1's credits
    async with serving(create_app(backend)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        client = Client(http)
        refused = await client.post(batch_bytes(chain, "k1"), "k1", token=own)
        assert refused.status_code == 403, refused.text
        assert "gw-2" in refused.json()["error"]
        assert "gw-1" in refused.json()["error"]
        # gw-2's batch whose credits name gw-1: every credit is rejected, nothing stored.
        mixed = await client.post(batch_bytes(chain, "k2", gateway=OTHER), "k2", token=own)
        assert mixed.status_code == 200
        assert {r["reason"] for r in mixed.json()["results"]} == {"malformed"}
        others = await client.get(f"/v1/gateways/{GW}/meters/m1/credits", CREDITS_PATH, token=own)
        assert others.status_code == 403
        assert (await client.get("/v1/summary", "/v1/summary", token=own)).json() == {"meters": []}
        assert (await client.post(batch_bytes(chain, "k3"), "k3", token=new_token())).status_code == 401
        assert (await client.post(batch_bytes(chain, "k3"), "k3", token=None)).status_code == 401
    assert await backend.credits(GW, "m1") == []


async def test_an_unenrolled_key_and_a_forged_signature_are_rejected(backend: CreditStore) -> None:
    token = await _enrol(backend, OTHER, OTHER_KEY.public_key)
    stranger = Keypair.random()  # a key this receiver never enrolled
    first = honest_chain(1)[0]
    # Properly signed by the stranger, for gw-2: only the enrolment tells it apart from gw-2's own.
    by_stranger = resign(first, keypair=stranger, gateway=OTHER, gateway_key=stranger.public_key)
    # gw-2's enrolled key named and the content changed after signing (hash and signature kept).
    forged = resign(first, keypair=OTHER_KEY, gateway=OTHER, gateway_key=OTHER_KEY.public_key)
    forged["credit"]["wh"] += 1
    forged["credit"]["register_end_wh"] += 1
    items = [by_stranger, forged]
    async with serving(create_app(backend)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        answer = await Client(http).post(batch_bytes(items, "k1", gateway=OTHER), "k1", token=token)
    assert answer.status_code == 200, answer.text
    assert [r["reason"] for r in answer.json()["results"]] == ["wrong_key", "bad_signature"]
    assert await backend.credits(OTHER, "m1") == []


async def test_an_unenrolled_gateway_is_403_even_with_the_shared_token(backend: CreditStore) -> None:
    async with serving(create_app(backend, "shared")) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await Client(http).post(batch_bytes(honest_chain(1), "k1", gateway="gw-nobody"), "k1",
                                           token="shared")
    assert response.status_code == 403
    assert "not enrolled" in response.json()["error"]


async def test_tokens_are_stored_only_as_their_sha256(backend: CreditStore, db_url: str) -> None:
    token = await _enrol(backend, OTHER, OTHER_KEY.public_key)
    if db_url.startswith("postgresql://"):
        conn = await asyncpg.connect(db_url)
        try:
            rows = [tuple(r) for r in await conn.fetch("SELECT * FROM gateways")]
        finally:
            await conn.close()
    else:
        with sqlite3.connect(db_url) as db:
            rows = db.execute("SELECT * FROM gateways").fetchall()
    assert token not in repr(rows)
    assert hashlib.sha256(token.encode()).hexdigest() in repr(rows)
    principal = await backend.principal(token)
    assert principal is not None
    assert principal.gateway == OTHER


async def test_a_revoked_gateway_is_refused_and_the_box_dead_letters_the_batch(backend: CreditStore,
                                                                               tmp_path: Path) -> None:
    token = await _enrol(backend, OTHER, OTHER_KEY.public_key)
    ledger = await Ledger.open(tmp_path / "box", gateway_id=OTHER, keypair=OTHER_KEY)
    readings = [Reading("m1", T0_MS + k * 60_000, 10_000 + 7 * k) for k in range(6 * 15 + 1)]
    await ledger.commit_readings(readings[:46], now_ms=1)  # three intervals
    try:
        summary = await _deliver_through_revocation(backend, ledger, token, readings)
    finally:
        await ledger.close()
    assert summary.dead_batches == 1
    assert "403" in (summary.last_error or "")
    assert "revoked" in (summary.last_error or "")
    assert summary.backlog == 3, "the refused credits stay queued on the box"
    assert len(await backend.credits(OTHER, "m1")) == 3, "nothing sent after the revocation was stored"


async def _deliver_through_revocation(backend: CreditStore, ledger: Ledger, token: str,
                                      readings: list[Reading]) -> UplinkSummary:
    async with serving(create_app(backend)) as url:
        cfg = BillingApiConfig(url=url, batch_size=50, max_batch_age_s=0, timeout_s=5, backoff_max_s=1)
        uplink = BillingApiUplink(cfg, ledger, SystemClock(), gateway_id=OTHER, token=token, wakeup=asyncio.Event)
        assert await uplink.drain(UNTIL_S) == 3
        assert len(await backend.credits(OTHER, "m1")) == 3
        await backend.revoke(OTHER, 2)
        await ledger.commit_readings(readings[46:], now_ms=2)  # three more intervals, sent after the revocation
        assert await uplink.drain(UNTIL_S) == 0
    return await ledger.uplink_summary(NAME)
