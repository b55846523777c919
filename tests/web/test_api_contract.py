"""The gateway's local API holds to its OpenAPI document (``gateway/web/openapi.yaml``), checked by independent tools.

``openapi-spec-validator`` validates the document the box serves; schemathesis (``--checks all``)
generates requests from it (valid and invalid ones) against a running gateway web server with a
real ledger (a few days of readings, so intervals, credits and a bill exist), a bus polling a
simulated Modbus meter (one-off reads really run) and a tariff, and checks every answer: status
declared, body, content type and headers as declared, no 5xx, invalid input refused, valid input
accepted, the token enforced, 405 with ``Allow`` for other methods. ``api_contract_hooks`` points
most requests at the site's meter and bus. Examples are bounded to keep the suite's time; run by
hand with a larger ``--max-examples`` to search harder.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from openapi_spec_validator import validate
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from stellar_sdk import Keypair

from gateway.acquisition.modbus import ModbusBus
from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter
from gateway.status import GatewayStatus
from gateway.web.app import WebContext, create_app
from gateway.web.auth import load_or_create_token
from gateway.web.openapi import OPENAPI_PATH, openapi_document
from gateway.web.server import free_port, serving

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
MAX_EXAMPLES = 10
"""Cases per operation and phase: about 400 requests, 20-30 s on this machine."""
RUN_TIMEOUT_S = 180.0
NOW = datetime(2025, 12, 16, 12, tzinfo=UTC)
DAYS = 3
"""Readings of the last three days: intervals and credits to serve, a bill to project."""

CONFIG = '''
gateway_id = "gw-contract"
site_timezone = "America/Detroit"
data_dir = "{data}"
[web]
profiles_dir = "{profiles}"
[[buses]]
name = "line"
host = "127.0.0.1"
port = {port}
timeout_s = 0.2
retries = 0
  [[buses.meters]]
  id = "house"
  unit_id = 1
  profile = "eastron-sdm630"
  poll_s = 900
  nmi = "NMI0000001"
  tariff = "flat"
  budget = "50.00"
[billing]
nem12_from_participant = "GATEWAY"
nem12_to_participant = "RETAILER"
[tariffs.flat]
name = "Flat"
currency = "USD"
[tariffs.flat.energy]
kind = "tiered"
tiers = [{{ rate = "0.20" }}]
[[p2p.agreements]]
id = 1
provider_meter = "house"
provider = "GBZXN7PIRZGNMHGA7MUUUF4GWPY5AYPV6LY4UV2GL6VJGIQRXFDNMADI"
consumer = "GAAZI4TCR3TY5OJHCTJC2A4QSY6CJWJH5IAJTGKIN2ER7LBNVKOCCWN7"
kwh = 10
price_per_kwh = 50
start = 2026-06-01T00:00:00Z
deadline = 2026-06-08T00:00:00Z
'''


OPERATIONS = ("/healthz", "/metrics", OPENAPI_PATH, "/api/v1/meters", "/api/v1/meters/house",
              "/api/v1/meters/house/projection", "/api/v1/meters/house/intervals", "/api/v1/sync",
              "/api/v1/credits", "/api/v1/lines", "/api/v1/buses/line/read", "/api/v1/p2p")


class Answers:
    """ASGI wrapper recording (path, status) of every answer: shows the run reached each operation's success."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: set[tuple[str, int]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.seen.add((scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, recording if scope["type"] == "http" else send)


@contextlib.asynccontextmanager
async def gateway_site(tmp_path: Path, answers: list[Answers] | None = None) -> AsyncIterator[tuple[str, str]]:
    """A running web server over a real ledger and a live bus; yields (base URL, token)."""
    now = NOW.timestamp()
    clock = ManualClock(now)
    sdm630 = builtin_profile("eastron-sdm630")
    sim = MeterSimulator([SimulatedMeter("house", 1, sdm630, LoadModel.for_meter("house", math.floor(now)))],
                         clock, port=free_port())
    await sim.start()
    (tmp_path / "profiles").mkdir()
    cfg = parse_config(CONFIG.format(data=tmp_path / "data", profiles=tmp_path / "profiles", port=sim.port),
                       base_dir=tmp_path)
    status = GatewayStatus(cfg.gateway_id, "G-TEST", now)

    async def submit(_: Reading) -> None:
        return None

    bus = ModbusBus(cfg.buses[0], {"house": sdm630}, clock, submit, status, use_lock=False)
    bus_task = asyncio.create_task(bus.run())
    ledger = await Ledger.open(cfg.data_dir, gateway_id=cfg.gateway_id, keypair=Keypair.random())
    try:
        first = int(now) - DAYS * 86400
        await ledger.commit_readings([Reading("house", t * 1000, 5_000_000 + (t - first) // 9)
                                      for t in range(first, int(now) + 1, 900)], now_ms=int(now) * 1000)
        token = load_or_create_token(cfg.data_dir)
        ctx = WebContext(status, ledger, clock, token, ("billing_api",), buses={"line": bus}, config=cfg,
                         profiles_dir=cfg.web.profiles_dir)
        app = Answers(create_app(ctx))
        if answers is not None:
            answers.append(app)
        async with serving(app) as url:
            yield url, token
    finally:
        bus_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bus_task
        await ledger.close()
        await sim.stop()


async def test_the_served_document_is_valid_openapi(tmp_path: Path) -> None:
    async with gateway_site(tmp_path) as (url, _), httpx.AsyncClient(base_url=url) as http:
        response = await http.get(OPENAPI_PATH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    assert response.content == openapi_document() == (REPO / "gateway" / "web" / "openapi.yaml").read_bytes()
    document = yaml.safe_load(response.content)
    validate(document)  # raises on any violation of OpenAPI 3.1
    assert OPENAPI_PATH in document["paths"]


@pytest.mark.slow
async def test_schemathesis_finds_nothing_against_the_gateway_api(tmp_path: Path) -> None:
    answers: list[Answers] = []
    async with gateway_site(tmp_path, answers) as (url, token):
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "api_contract_hooks",
               "PYTHONPATH": os.pathsep.join((str(HERE), str(REPO)))}
        proc = await asyncio.create_subprocess_exec(
            SCHEMATHESIS, "run", f"{url}{OPENAPI_PATH}", "--url", url, "--checks", "all", "--workers", "1",
            "--max-examples", str(MAX_EXAMPLES), "--request-timeout", "40", "-H", f"Authorization: Bearer {token}",
            cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            async with asyncio.timeout(RUN_TIMEOUT_S):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    stdout = out.decode(errors="replace")
    report = stdout[-8000:] + err.decode(errors="replace")[-2000:]
    assert proc.returncode == 0, report
    assert "No issues found" in stdout, report
    assert "WARNINGS" not in stdout, report
    ok = {path for path, status in answers[0].seen if status == 200}
    assert ok >= set(OPERATIONS), f"no 200 from {sorted(set(OPERATIONS) - ok)}"
