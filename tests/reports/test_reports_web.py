"""``GET /api/v1/meters/{id}/projection`` and ``/intervals`` over real HTTP, next to the existing routes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest
from starlette.applications import Starlette
from stellar_sdk import Keypair

from gateway.clock import ManualClock
from gateway.ledger.store import Ledger
from gateway.reports.web import report_routes
from gateway.status import GatewayStatus
from gateway.web.app import WebContext, create_app
from gateway.web.server import serving
from tests.reports.conftest import DEC_1, DECEMBER_INTERVALS, DECEMBER_WH, NMI_HOUSE, ZONE, Site, house_register

AS_OF = datetime(2025, 12, 16, tzinfo=ZONE)
"""Fifteen complete days of December's 31."""
AUTH = {"Authorization": "Bearer tok"}


@pytest.fixture
async def http(site: Site) -> AsyncIterator[httpx.AsyncClient]:
    ledger = await Ledger.open(site.data_dir, gateway_id="gw-test-reports", keypair=Keypair.random())
    ctx = WebContext(GatewayStatus("gw-test-reports", "G", 0), ledger, ManualClock(AS_OF.timestamp()), "tok", ())
    app = Starlette(routes=[*create_app(ctx).routes, *report_routes(ctx, site.cfg)])
    try:
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            yield client
    finally:
        await ledger.close()


async def test_projection_mid_period_both_methods_confidence_and_budget(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/v1/meters/house/projection")).status_code == 401
    response = await http.get("/api/v1/meters/house/projection", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["meter"] == "house"
    assert body["as_of"] == "2025-12-16T05:00:00+00:00"
    assert body["period"] == {"start": "2025-12-01", "end": "2026-01-01", "tz": "America/Detroit", "days": 31}
    ptd = body["period_to_date"]
    assert ptd["days_complete"] == 15
    assert ptd["days_remaining"] == 16
    assert ptd["usage_wh"] == DECEMBER_WH * 15 * 96 // DECEMBER_INTERVALS
    assert ptd["coverage"] == 1.0
    assert ptd["charges"]["period"]["end"] == "2025-12-16", "charges to date bill the completed days"
    assert body["confidence"] == pytest.approx(15 / 31)
    assert set(body["projections"]) == {"DAILY_AVERAGE", "WEIGHTED_AVERAGE"}
    daily = body["projections"]["DAILY_AVERAGE"]
    assert abs(daily["projected_usage_wh"] - DECEMBER_WH) <= 1, "a steady month projects to itself"
    assert daily["projected_bill"]["total_minor"] == 11506
    assert daily["projected_total"] == "115.06"
    weighted = body["projections"]["WEIGHTED_AVERAGE"]
    assert weighted["basis_days"] == 16, "weighted reaches back before the period start (Nov 30)"
    assert weighted["projected_usage_wh"] > daily["projected_usage_wh"], "Nov 30 used more per day"
    assert body["default_method"] == "DAILY_AVERAGE"
    assert body["budget"] == {
        "budget_minor": 10000, "budget": "100.00", "method": "DAILY_AVERAGE", "projected_total_minor": 11506,
        "over_by_minor": 1506, "status": "over", "exceeded": True,
        "message": body["budget"]["message"],
    }
    assert "exceeds the budget USD 100.00 by USD 15.06" in body["budget"]["message"]


async def test_projection_errors(http: httpx.AsyncClient) -> None:
    unknown = await http.get("/api/v1/meters/nobody/projection", headers=AUTH)
    assert unknown.status_code == 404
    assert "no meter 'nobody'" in unknown.json()["error"]
    no_tariff = await http.get("/api/v1/meters/shed/projection", headers=AUTH)
    assert no_tariff.status_code == 409
    assert "has no tariff" in no_tariff.json()["error"]


async def test_intervals_as_json_nem12_and_green_button(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/v1/meters/house/intervals")).status_code == 401
    day = await http.get("/api/v1/meters/house/intervals", params={"from": "2025-12-02", "to": "2025-12-03"},
                         headers=AUTH)
    assert day.status_code == 200
    body = day.json()
    assert body["count"] == 96
    first = body["intervals"][0]
    assert first == {"start": "2025-12-02T05:00:00Z", "end": "2025-12-02T05:15:00Z", "wh": first["wh"],
                     "quality": "A", "method": None, "reason": None}
    base = (int(DEC_1.timestamp()) - int(datetime(2025, 11, 30, tzinfo=ZONE).timestamp())) // 900 + 96
    assert body["total_wh"] == house_register(base + 96) - house_register(base)

    instant = await http.get("/api/v1/meters/house/intervals", headers=AUTH,
                             params={"from": "2025-12-02T05:00:00Z", "to": "2025-12-02T06:00:00+00:00"})
    assert instant.json()["count"] == 4
    default = await http.get("/api/v1/meters/house/intervals", headers=AUTH)
    assert default.json()["from"] == "2025-12-16T05:00:00Z", "today, local"
    assert default.json()["count"] == 96

    nem12 = await http.get("/api/v1/meters/house/intervals", headers=AUTH,
                           params={"from": "2025-12-02", "to": "2025-12-03", "format": "nem12"})
    assert nem12.status_code == 200
    assert nem12.headers["content-type"].startswith("text/csv")
    records = [line.split(",") for line in nem12.text.split("\r\n") if line]
    assert records[0][:2] == ["100", "NEM12"]
    assert records[-1] == ["900"]
    assert [r[1] for r in records if r[0] == "200"] == [NMI_HOUSE]

    gb = await http.get("/api/v1/meters/house/intervals", headers=AUTH,
                        params={"from": "2025-12-02", "to": "2025-12-03", "format": "greenbutton"})
    assert gb.status_code == 200
    assert gb.headers["content-type"].startswith("application/atom+xml")
    values = [int(v.text or "") for v in ET.fromstring(gb.content).iter("{http://naesb.org/espi}value")]
    assert sum(values) == body["total_wh"]


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/api/v1/meters/nobody/intervals", {}, 404, "no meter 'nobody'"),
        ("/api/v1/meters/house/intervals", {"from": "yesterday"}, 400, "from and to must be"),
        ("/api/v1/meters/house/intervals", {"from": "2025-12-02", "to": "2025-12-01"}, 400, "need from < to"),
        ("/api/v1/meters/house/intervals", {"from": "2024-01-01", "to": "2025-12-01"}, 400, "at most 366"),
        ("/api/v1/meters/house/intervals", {"format": "xlsx"}, 400, "format must be one of"),
        ("/api/v1/meters/pv/intervals", {"format": "nem12"}, 409, "meter 'pv' has no NMI"),
    ],
)
async def test_interval_request_errors(http: httpx.AsyncClient, path: str, params: dict[str, str], status: int,
                                       message: str) -> None:
    response = await http.get(path, params=params, headers=AUTH)
    assert response.status_code == status
    assert message in response.json()["error"]
