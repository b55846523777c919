"""Helpers for the reference receiver's tests: honest chains, signed nonsense, a gateway-side HTTP client."""

from __future__ import annotations

import json
from typing import Any

import httpx
from stellar_sdk import Keypair

from cloud_sync.credit import CreditBody, sign
from gateway.credits import Tip, credit_for_interval
from gateway.intervals import Interval, Quality

GW = "gw-1"
KEY = Keypair.from_raw_ed25519_seed(bytes(range(1, 33)))
TOKEN = "receiver-test-token"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a quarter-hour boundary (s)


def honest_chain(n: int, meter: str = "m1", keypair: Keypair = KEY) -> list[dict[str, Any]]:
    """n consecutive interval credits of one meter, as the gateway makes them, in wire form."""
    tip = Tip()
    out = []
    register = 50_000
    for k in range(n):
        wh = 100 + k
        interval = Interval(meter, T0 + 900 * k, T0 + 900 * (k + 1), wh, Quality.ACTUAL, register, register + wh)
        register += wh
        signed, tip = credit_for_interval(interval, tip, gateway_id=GW, keypair=keypair, created_ms=T0 * 1000)
        out.append(json.loads(signed.wire_json()))
    return out


def resign(item: dict[str, Any], keypair: Keypair = KEY, **changes: Any) -> dict[str, Any]:
    """The credit with some fields changed and signed again by the gateway key: signed nonsense."""
    body = CreditBody(**{**item["credit"], **changes})
    return json.loads(sign(body, keypair).wire_json())


def batch_bytes(credits: list[Any], key: str, gateway: str = GW) -> bytes:
    return json.dumps({"gateway": gateway, "batch": key, "credits": credits}).encode()


class Client:
    """A gateway's view of a receiver over real HTTP."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(self, body: bytes, key: str, *, token: str | None = TOKEN,
                   content_type: str = "application/json", **headers: str) -> httpx.Response:
        sent = {"Idempotency-Key": key, "Content-Type": content_type, **headers}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return await self.http.post("/v1/batches", content=body, headers=sent)

    async def send(self, credits: list[Any], key: str) -> httpx.Response:
        return await self.post(batch_bytes(credits, key), key)

    async def stored(self, meter: str = "m1") -> list[dict[str, Any]]:
        answer = await self.http.get(f"/v1/gateways/{GW}/meters/{meter}/credits",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200
        return list(answer.json()["credits"])
