"""The reference receiver over real HTTP: bad input is refused with a clear 4xx or rejected credit by credit.

Nothing a gateway (or anyone holding the token) sends may make the receiver answer 500, overwrite an
answer it gave, or acknowledge a credit it has not verified.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from receiver_kit import CREDITS_PATH, GW, KEY, TOKEN, Client, batch_bytes, honest_chain

from cloud_sync.receiver import ReceiverStore, create_app
from cloud_sync.receiver.pg_sandbox import PgSandbox
from cloud_sync.receiver.store_pg import PgStore
from gateway.web.server import serving


def _statuses(answer: dict[str, Any]) -> list[str]:
    return [r["status"] for r in answer["results"]]


async def test_an_idempotency_key_reused_with_another_body_is_422_and_the_stored_answer_stands(
        client: Client) -> None:
    chain = honest_chain(3)
    first = await client.send(chain[:2], "k1")
    assert first.status_code == 200
    assert first.json()["accepted"] == 2
    other = await client.send(chain[2:], "k1")  # same key, different body
    assert other.status_code == 422, other.text
    assert "Idempotency-Key" in other.json()["error"]
    again = await client.send(chain[:2], "k1")  # the original batch resent: its stored answer, unchanged
    assert again.status_code == 200
    assert again.json()["replayed"] is True
    assert _statuses(again.json()) == ["accepted", "accepted"]
    assert [c["credit"]["seq"] for c in await client.stored()] == [1, 2], "the other body stored nothing"


async def test_a_tampered_credit_that_keeps_a_stored_hash_is_rejected_not_acknowledged(client: Client) -> None:
    chain = honest_chain(2)
    assert (await client.send(chain, "k1")).json()["accepted"] == 2
    tampered = json.loads(json.dumps(chain[1]))
    tampered["credit"]["wh"] = 9_999  # the stored hash and signature kept
    forged_signature = json.loads(json.dumps(chain[1]))
    forged_signature["signature"] = chain[0]["signature"]
    answer = (await client.send([chain[0], tampered, forged_signature], "k2")).json()
    assert _statuses(answer) == ["duplicate", "rejected", "rejected"]
    assert answer["results"][1]["reason"] == "bad_signature"
    assert answer["results"][2]["reason"] == "bad_signature"
    assert all(r["detail"] for r in answer["results"][1:])
    assert (await client.stored())[1] == chain[1], "the stored credit is untouched"


async def test_one_credit_with_a_seq_beyond_64_bits_is_rejected_alone(client: Client) -> None:
    chain = honest_chain(2)
    junk = json.loads(json.dumps(chain[1]))
    junk["credit"]["seq"] = 10**30
    response = await client.send([chain[0], junk, chain[1]], "k1")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert _statuses(answer) == ["accepted", "rejected", "accepted"]
    assert answer["results"][1] == {"meter": "m1", "channel": "import", "seq": None, "status": "rejected",
                                    "reason": "malformed",
                                    "detail": answer["results"][1]["detail"]}
    assert "seq" in answer["results"][1]["detail"]


async def test_one_credit_with_a_5000_digit_integer_is_rejected_alone(client: Client) -> None:
    chain = honest_chain(2)
    junk = json.loads(json.dumps(chain[1]))
    junk["credit"]["wh"] = "HUGE"
    body = batch_bytes([chain[0], junk, chain[1]], "k1").replace(b'"HUGE"', b"9" * 5000)
    response = await client.post(body, "k1")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert _statuses(answer) == ["accepted", "rejected", "accepted"]
    assert answer["results"][1]["reason"] == "malformed"
    assert "'wh'" in answer["results"][1]["detail"]


async def test_a_body_that_is_not_utf8_is_400(client: Client) -> None:
    body = batch_bytes(honest_chain(1), "k1").replace(b'"gw-1"', b'"gw-\xff\xfe"')
    response = await client.post(body, "k1")
    assert response.status_code == 400, response.text
    assert "UTF-8" in response.json()["error"]
    utf16 = batch_bytes(honest_chain(1), "k2").decode().encode("utf-16")
    assert (await client.post(utf16, "k2")).status_code == 400


async def test_nan_and_infinity_are_rejected_credit_by_credit(client: Client) -> None:
    chain = honest_chain(3)
    body = batch_bytes(chain, "k1")
    body = body.replace(b'"seq": 2', b'"seq": NaN', 1).replace(b'"wh": 102', b'"wh": -Infinity', 1)
    response = await client.post(body, "k1")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert _statuses(answer) == ["accepted", "rejected", "rejected"]
    assert [r["seq"] for r in answer["results"]] == [1, None, 3]


async def test_a_result_never_echoes_unchecked_meter_or_seq(client: Client) -> None:
    chain = honest_chain(1)
    odd: list[Any] = []
    for meter, seq in ((123, "7"), ({"a": 1}, [1]), ("m\ud800", True), ("x" * 10_000, 1.5)):
        item = json.loads(json.dumps(chain[0]))
        item["credit"]["meter"], item["credit"]["seq"] = meter, seq
        odd.append(item)
    response = await client.send([*odd, 5, "text", None], "k1")
    assert response.status_code == 200, response.text
    for result in response.json()["results"]:
        assert result["status"] == "rejected"
        assert result["reason"] == "malformed"
        assert result["meter"] is None or (isinstance(result["meter"], str) and len(result["meter"]) <= 64)
        assert result["seq"] is None
    assert response.json()["results"][0]["meter"] is None


async def test_extra_properties_are_refused(client: Client) -> None:
    chain = honest_chain(2)
    extra_wire = {**chain[1], "note": "x"}
    answer = (await client.send([chain[0], extra_wire], "k1")).json()
    assert _statuses(answer) == ["accepted", "rejected"]
    assert "note" in answer["results"][1]["detail"]
    body = json.dumps({"gateway": GW, "batch": "k2", "credits": chain[1:], "priority": 1}).encode()
    response = await client.post(body, "k2")
    assert response.status_code == 400
    assert "priority" in response.json()["error"]


async def test_a_batch_over_the_contracts_limit_is_400(client: Client) -> None:
    response = await client.send([{}] * 5001, "k1")
    assert response.status_code == 400, response.text[:300]
    assert "5000" in response.json()["error"]
    assert (await client.send([{}] * 5000, "k2")).status_code == 200


async def test_an_idempotency_key_over_200_characters_is_400(client: Client) -> None:
    key = "k" * 201
    response = await client.send(honest_chain(1), key)
    assert response.status_code == 400, response.text
    assert "200" in response.json()["error"]
    assert (await client.send(honest_chain(1), "k" * 200)).status_code == 200


async def test_a_wrong_content_type_is_415(client: Client) -> None:
    body = batch_bytes(honest_chain(1), "k1")
    response = await client.post(body, "k1", content_type="text/plain")
    assert response.status_code == 415, response.text
    assert (await client.post(body, "k1", content_type="application/json; charset=utf-8")).status_code == 200


async def test_json_nested_beyond_reason_is_400(client: Client) -> None:
    body = b'{"gateway": "gw-1", "batch": "k1", "credits": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}"
    response = await client.post(body, "k1")
    assert response.status_code == 400, response.text


async def test_a_declared_body_over_the_limit_is_413_before_it_is_read(client: Client) -> None:
    url = httpx.URL(str(client.http.base_url))
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() +
                 b"\r\nIdempotency-Key: k1\r\nContent-Type: application/json\r\nContent-Length: " +
                 str(10**12).encode() + b"\r\n\r\n{}")
    await writer.drain()
    async with asyncio.timeout(10):  # the receiver answers without waiting for the terabyte
        status_line = await reader.readline()
    writer.close()
    assert status_line.split()[1] == b"413", status_line


async def test_requests_without_the_token_are_401(client: Client) -> None:
    body = batch_bytes(honest_chain(1), "k1")
    for token in (None, "wrong"):
        response = await client.post(body, "k1", token=token)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    for path, template in (("/v1/summary", "/v1/summary"), (f"/v1/gateways/{GW}/meters/m1/credits", CREDITS_PATH)):
        assert (await client.get(path, template, token=None)).status_code == 401
    assert (await client.get("/healthz", "/healthz", token=None)).status_code == 200


async def test_an_unknown_gateway_is_403(client: Client) -> None:
    response = await client.post(batch_bytes(honest_chain(1), "k1", gateway="gw-other"), "k1")
    assert response.status_code == 403
    assert "gw-other" in response.json()["error"]


async def test_the_summary_adds_up_what_was_accepted(client: Client) -> None:
    chain = honest_chain(3)
    await client.send(chain, "k1")
    answer = await client.get("/v1/summary", "/v1/summary")
    assert answer.json() == {"meters": [{"gateway": GW, "meter": "m1", "channel": "import", "credits": 3,
                                         "first_seq": 1, "last_seq": 3, "wh": 100 + 101 + 102}]}


async def test_storage_that_is_locked_is_a_503_to_retry_and_nothing_is_stored(tmp_path: Path) -> None:
    """SQLite: another process holds the file's write lock past the busy timeout."""
    store = ReceiverStore(tmp_path / "receiver.db", {GW: KEY.public_key})
    other = sqlite3.connect(tmp_path / "receiver.db", isolation_level=None)
    async with serving(create_app(store, TOKEN)) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        client = Client(http)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the database past the store's busy timeout
        try:
            response = await client.send(honest_chain(1), "k1")
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"]
        assert await client.stored() == []
        assert (await client.send(honest_chain(1), "k1")).json()["accepted"] == 1, "the retry goes through"
    store.close()


async def test_a_gateway_locked_past_the_lock_timeout_is_a_503_and_nothing_is_stored(pg_server: PgSandbox) -> None:
    """PostgreSQL: another session holds the gateway's row (as a receiver examining its batch would) too long."""
    url = pg_server.create_database()
    store = await PgStore.open(url, lock_timeout_s=0.5)
    await store.ensure_enrolled(GW, KEY.public_key, 0)
    other = await asyncpg.connect(url)
    async with serving(create_app(store, TOKEN)) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        client = Client(http)
        try:
            async with other.transaction():
                await other.execute("SELECT 1 FROM gateways WHERE gateway = $1 FOR UPDATE", GW)
                response = await client.send(honest_chain(1), "k1")
        finally:
            await other.close()
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"]
        assert "lock" in response.json()["error"].lower()
        assert await client.stored() == []
        assert (await client.send(honest_chain(1), "k1")).json()["accepted"] == 1, "the retry goes through"
    await store.close()
