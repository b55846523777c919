"""Helpers for the reference receiver's tests: honest chains, signed nonsense, a gateway-side HTTP client."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from stellar_sdk import Keypair

from cloud_sync.credit import CreditBody, sign
from gateway.channels import Channel
from gateway.credits import Tip, credit_for_interval
from gateway.intervals import Interval, Quality

GW = "gw-1"
KEY = Keypair.from_raw_ed25519_seed(bytes(range(1, 33)))
TOKEN = "receiver-test-token"
CREDITS_PATH = "/v1/gateways/{gateway}/meters/{meter}/credits"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a quarter-hour boundary (s)


def honest_chain(n: int, meter: str = "m1", keypair: Keypair = KEY, *, channel: Channel = Channel.IMPORT,
                 tip: Tip | None = None) -> list[dict[str, Any]]:
    """n consecutive interval credits of one meter's channel, as the gateway makes them, in wire form
    (going on from ``tip``: a chain's last credit)."""
    first = tip.seq if tip else 0
    tip = tip or Tip()
    out = []
    register = 50_000 + sum(100 + k for k in range(first))
    for k in range(first, first + n):
        wh = 100 + k
        interval = Interval(meter, T0 + 900 * k, T0 + 900 * (k + 1), wh, Quality.ACTUAL, register, register + wh,
                            channel=channel)
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


@cache
def contract() -> dict[str, Any]:
    """``cloud_sync/openapi.yaml`` as shipped in the package."""
    return dict(yaml.safe_load(resources.files("cloud_sync").joinpath("openapi.yaml").read_text()))


def _pointer(*parts: str) -> str:
    return "/".join(quote(p.replace("~", "~0").replace("/", "~1"), safe="") for p in parts)


def check_against_contract(method: str, path: str, response: httpx.Response) -> None:
    """The answer's status is declared for the operation, and its JSON body matches the declared schema."""
    spec = contract()
    declared = spec["paths"][path][method]["responses"].get(str(response.status_code))
    assert declared is not None, f"{method.upper()} {path}: status {response.status_code} is not in the contract"
    if "$ref" in declared:
        declared = spec["components"]["responses"][declared["$ref"].rsplit("/", 1)[1]]
    content = declared.get("content")
    if not content:
        return
    assert response.headers["content-type"].startswith("application/json")
    registry: Registry[Any] = Registry().with_resource("urn:contract",
                                                       Resource.from_contents(spec, default_specification=DRAFT202012))
    status = str(response.status_code)
    pointer = _pointer("paths", path, method, "responses", status, "content", "application/json", "schema")
    if "$ref" in spec["paths"][path][method]["responses"][status]:
        pointer = declared["content"]["application/json"]["schema"]["$ref"].lstrip("#/")
    validator = jsonschema.Draft202012Validator({"$ref": f"urn:contract#/{pointer}"}, registry=registry)
    errors = sorted(validator.iter_errors(response.json()), key=str)
    assert not errors, f"{method.upper()} {path} {status}: body does not match the contract: {errors[0].message}"


class Client:
    """A gateway's view of a receiver over real HTTP."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(self, body: bytes, key: str, *, token: str | None = TOKEN,
                   content_type: str = "application/json", **headers: str) -> httpx.Response:
        sent = {"Idempotency-Key": key, "Content-Type": content_type, **headers}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        response = await self.http.post("/v1/batches", content=body, headers=sent)
        check_against_contract("post", "/v1/batches", response)
        return response

    async def get(self, path: str, template: str, *, token: str | None = TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.http.get(path, headers=headers)
        check_against_contract("get", template, response)
        return response

    async def send(self, credits: list[Any], key: str) -> httpx.Response:
        return await self.post(batch_bytes(credits, key), key)

    async def stored(self, meter: str = "m1") -> list[dict[str, Any]]:
        answer = await self.get(f"/v1/gateways/{GW}/meters/{meter}/credits", CREDITS_PATH)
        assert answer.status_code == 200
        return list(answer.json()["credits"])
