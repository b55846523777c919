"""GET /api/v1/p2p: the configured agreements with their delivery records, signed as made."""

from __future__ import annotations

from pathlib import Path

import httpx

from cloud_sync.credit import canonical_bytes
from cloud_sync.keys import Keypair
from gateway.config import parse_config
from gateway.ledger.store import Ledger
from gateway.p2p.planner import Decision
from gateway.p2p.record import verify
from gateway.p2p.store import P2PStore
from gateway.p2p.task import agreements_of
from gateway.status import GatewayStatus
from gateway.web.app import WebContext, create_app
from tests.p2p.conftest import StepClock
from tests.p2p.test_p2p_config import HEAD, agreement


async def test_agreements_and_their_records(tmp_path: Path) -> None:
    cfg = parse_config(HEAD.replace('gateway_id = "gw"', f'gateway_id = "gw"\ndata_dir = "{tmp_path}"')
                       + agreement() + agreement(id="2"))
    assert cfg.p2p is not None
    key = Keypair.random()
    ledger = await Ledger.open(cfg.data_dir, gateway_id=cfg.gateway_id, keypair=key)
    try:
        first = agreements_of(cfg.p2p.agreements)[0]
        await P2PStore(ledger).insert_record(Decision(1, 10, "quantity", (), 0, 250, 7_000_250, first.terms.start),
                                             first, gateway=cfg.gateway_id, keypair=key, now=1_780_300_000)
        clock = StepClock(1_780_300_000)
        ctx = WebContext(GatewayStatus(cfg.gateway_id, key.public_key, clock.now()), ledger, clock, "tok", (),
                         config=cfg)
        transport = httpx.ASGITransport(app=create_app(ctx))
        async with httpx.AsyncClient(transport=transport, base_url="http://box") as http:
            assert (await http.get("/api/v1/p2p")).status_code == 401
            doc = (await http.get("/api/v1/p2p", headers={"Authorization": "Bearer tok"})).json()
    finally:
        await ledger.close()
    one, two = doc["agreements"]
    assert (one["id"], one["kwh"], one["provider_meter"], two["delivery"]) == (1, 10, "solar-1", None)
    d = one["delivery"]
    assert (d["state"], d["kwh"], d["meter_reading"], d["contract_tx_id"]) == ("pending", 10, 7_000_250, None)
    assert d["record"]["body"]["carry_out_wh"] == 250
    # The body is served as data; its canonical encoding is what the gateway signed.
    assert verify(canonical_bytes(d["record"]["body"]), d["record"]["signature"], key.public_key)
