"""``GET /api/v1/p2p``: the configured agreements and each one's delivery record, for the installer and the
central system (what the box attested, whether the contract has it, or the contract's error)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.web.auth import denied

if TYPE_CHECKING:  # gateway.web.app mounts this route; importing it at run time would be circular
    from gateway.p2p.store import RecordRow
    from gateway.web.app import WebContext


def _delivery(row: RecordRow | None, signature: str | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"state": row.state, "kwh": row.kwh, "meter_reading": row.meter_reading,
            "contract_tx_id": row.contract_tx_id, "error": row.error_name, "detail": row.detail,
            "record": {"body": row.body, "hash": row.hash, "signature": signature}}


def p2p_routes(ctx: WebContext) -> list[Route]:
    async def agreements(request: Request) -> Response:
        if not ctx.auth.authorised(request):
            return denied(request)
        from gateway.p2p.store import P2PStore  # the planner and record signing: at the first request

        cfg = ctx.config.p2p if ctx.config else None
        store = P2PStore(ctx.ledger)
        rows = {r.agreement_id: r for r in await store.records()}
        signatures = dict(await ctx.ledger.read_rows("SELECT agreement_id, signature FROM p2p_deliveries"))
        out = []
        for a in cfg.agreements if cfg else []:
            row = rows.get(a.id)
            out.append({"id": a.id, "provider_meter": a.provider_meter, "provider": a.provider,
                        "consumer": a.consumer, "kwh": a.kwh, "price_per_kwh": a.price_per_kwh,
                        "start": a.start_s, "deadline": a.deadline_s, "status": a.status,
                        "delivery": _delivery(row, signatures.get(a.id))})
        return Response(json.dumps({"agreements": out}), media_type="application/json")

    return [Route("/api/v1/p2p", agreements)]


__all__ = ["p2p_routes"]
