"""Issued bills on the web: the printable bill, the bill API, and issuing by the daemon.

* ``GET /bills/{number}``: the bill as a customer gets it, one self-contained page whose print style
  makes it the paper bill (A4, no navigation); a replaced bill says so at the top and links its successor.
  Times are the site's local time, UTC on hover.
* ``GET /api/v1/meters/{meter}/bills``: a meter's bill history; ``GET /api/v1/bills/{number}``: one bill
  as issued (the signed document) with its verification now.
* ``POST /api/v1/meters/{meter}/bills`` ``{"from", "to", "replaces"?, "tariff_sha256"?, "site_timezone"?}``:
  issue through the daemon's single writer (what ``meter-gateway bill --issue`` uses while the daemon
  runs). The two optional checks refuse (409) when the caller's config prices the meter otherwise.

The page's only inline code is its ``<style>``, allowed by hash in the Content-Security-Policy
(:func:`style_sources`); it has no script.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.billing import BillingError, BillingPeriod, format_minor
from gateway.billing.money import fraction_to_str
from gateway.billing.period import zone_for
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, LedgerError
from gateway.reports.bills import (
    NUMBER_RE,
    IssuedBill,
    UnknownBill,
    Verification,
    get_bill,
    issue_bill,
    list_bills,
    tariff_fingerprint,
    verify_bill,
)
from gateway.reports.service import ReportConfigError, UnknownMeter, check_meter
from gateway.web.auth import denied
from gateway.web.bills_link import BILL_TEMPLATE
from gateway.web.templating import render

if TYPE_CHECKING:  # gateway.web.app mounts these routes
    from gateway.web.app import WebContext

QUALITY_LABELS = {"A": "actual", "E": "estimated", "F": "final substituted", "S": "substituted", "N": "no data",
                  "V": "variable"}
MAX_BODY_BYTES = 4096
SIGN_IN = ("<!doctype html><meta charset=\"utf-8\"><title>Bill</title><p>Sign in on the "
           "<a href=\"/\">status page</a> first, then open this bill again.</p>")



def _error(message: str, status: int) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _quantity(item: dict[str, Any]) -> str:
    quantity, unit = Fraction(item["quantity"]), item["unit"]
    if unit == "kWh":
        return f"{fraction_to_str(quantity)} kWh"
    if unit == "period":
        return "1 period" if quantity == 1 else f"{fraction_to_str(quantity)} period"
    if unit == "bill":
        return ""
    return f"of {fraction_to_str(quantity)}"  # a tax: a share of the subtotal


def _rate(item: dict[str, Any]) -> str:
    if item["unit"] == "kWh":
        return f"{item['rate']} /kWh"
    if item["kind"] == "tax":
        return f"{Decimal(item['rate']) * 100:g} %"
    return "" if item["unit"] == "bill" else f"{item['rate']}"


def _line(item: dict[str, Any], minor: int) -> dict[str, str]:
    return {"label": item["label"], "quantity": _quantity(item), "rate": _rate(item),
            "amount": format_minor(item["amount_minor"], minor)}


def page_values(bill: IssuedBill, verification: Verification, tz: str) -> dict[str, Any]:
    """What the template shows, every amount already formatted to the minor unit."""
    doc = bill.content
    period = doc["period"]
    issued = datetime.fromisoformat(doc["issued_at"].replace("Z", "+00:00"))
    minor = int(doc["minor_units"])
    return {
        "number": bill.number, "meter": doc["meter"], "nmi": doc.get("nmi"), "tariff": doc["tariff"],
        "first_day": period["start"], "last_day": date.fromordinal(date.fromisoformat(period["end"]).toordinal() - 1),
        "days": period["days"], "full_cycle": doc["proration"] == "1", "proration": doc["proration"],
        "issued_utc": doc["issued_at"], "issued_local": issued.astimezone(zone_for(tz)).strftime("%Y-%m-%d %H:%M"),
        "tz": tz, "replaces": doc.get("replaces"), "replaced_by": bill.summary.replaced_by,
        "energy_kwh": fraction_to_str(Fraction(doc["energy_wh"], 1000)), "currency": doc["currency"],
        "lines": [_line(item, minor) for item in doc["line_items"] if item["kind"] != "feed_in"],
        "feed_in": "net_minor" in doc,
        "export_kwh": fraction_to_str(Fraction(doc["export_wh"], 1000)) if "export_wh" in doc else None,
        "credits": [_line(item, minor) for item in doc["line_items"] if item["kind"] == "feed_in"],
        "charges": format_minor(doc["charges_minor"], minor) if "charges_minor" in doc else None,
        "net": format_minor(doc["net_minor"], minor) if "net_minor" in doc else None,
        "owed": doc.get("net_minor", 0) < 0, "zero": format_minor(0, minor),
        "total": doc["total"], "priced": doc["data"]["intervals_priced"], "expected": doc["data"]["intervals_expected"],
        "qualities": [{"label": QUALITY_LABELS.get(q, q), "count": n} for q, n in doc["data"]["qualities"].items()],
        "verified": verification.ok, "problems": "; ".join(verification.problems),
        "gateway": doc["gateway"], "gateway_key": doc["gateway_key"], "document_sha256": bill.document_sha256,
        "intervals_sha256": doc["data"]["sha256"],
    }


def render_page(bill: IssuedBill, verification: Verification, tz: str) -> str:
    return render(BILL_TEMPLATE, b=page_values(bill, verification, tz))


def bill_routes(ctx: WebContext, config: GatewayConfig | None) -> list[Route]:
    tz = config.site_timezone if config is not None else "UTC"

    async def _found(number: str) -> tuple[IssuedBill, Verification] | None:
        if not NUMBER_RE.match(number):
            return None
        try:
            bill = await get_bill(ctx.ledger, number)
        except UnknownBill:
            return None
        return bill, await verify_bill(ctx.ledger, bill)

    async def page(request: Request) -> Response:
        if not ctx.auth.authorised(request):
            return HTMLResponse(SIGN_IN, status_code=401)
        try:
            found = await _found(request.path_params["number"])
        except GatewayError as exc:
            return HTMLResponse(f"<!doctype html><meta charset=\"utf-8\"><p>Cannot read bills: {html.escape(str(exc))}"
                                "</p>", status_code=503)
        if found is None:
            return HTMLResponse("<!doctype html><meta charset=\"utf-8\"><title>No such bill</title>"
                                "<p>No bill with this number. <a href=\"/\">Status page</a></p>", status_code=404)
        return HTMLResponse(render_page(*found, tz))

    async def one(request: Request) -> Response:
        if not ctx.auth.authorised(request):
            return denied(request)
        number = request.path_params["number"]
        try:
            found = await _found(number)
        except GatewayError as exc:
            return _error(str(exc), 503)
        if found is None:
            return _error(f"no bill {number!r}", 404)
        bill, verification = found
        return JSONResponse({**bill.to_dict(), "verification": verification.to_dict()})

    async def history(request: Request) -> Response:
        if not ctx.auth.authorised(request):
            return denied(request)
        meter = request.path_params["meter"]
        if request.method == "POST":
            return await issue(request, meter)
        if config is not None:
            try:
                check_meter(config, meter)
            except UnknownMeter as exc:
                return _error(str(exc), 404)
        try:
            bills = await list_bills(ctx.ledger, meter)
        except GatewayError as exc:
            return _error(str(exc), 503)
        return JSONResponse({"meter": meter, "bills": [b.to_dict() for b in bills]})

    async def issue(request: Request, meter: str) -> Response:
        if config is None or ctx.keypair is None:
            return _error("this gateway cannot issue bills (no configuration or key)", 503)
        body = await request.body()
        try:
            if len(body) > MAX_BODY_BYTES:
                raise ValueError("the request body is too large")
            asked = _issue_request(body)
            period = BillingPeriod(date.fromisoformat(asked["from"]), date.fromisoformat(asked["to"]),
                                   config.site_timezone)
        except (ValueError, TypeError, KeyError, BillingError) as exc:
            return _error(f"give {{\"from\": \"YYYY-MM-DD\", \"to\": \"YYYY-MM-DD\"}} (local days, to exclusive): "
                          f"{exc}", 400)
        try:
            check_meter(config, meter)
            if asked.get("site_timezone") not in (None, config.site_timezone):
                return _error(f"the running daemon's site_timezone is {config.site_timezone}, not "
                              f"{asked['site_timezone']}: restart the daemon with your config file, then issue "
                              "again", 409)
            if asked.get("tariff_sha256") not in (None, tariff_fingerprint(config, meter)):
                return _error(f"the running daemon prices meter {meter!r} under another tariff than your config "
                              "file: restart the daemon so it loads the file's tariffs, then issue again", 409)
            bill = await issue_bill(ctx.ledger, config, meter, period, keypair=ctx.keypair,
                                    now=datetime.fromtimestamp(ctx.clock.now(), UTC), replaces=asked.get("replaces"))
        except UnknownMeter as exc:
            return _error(str(exc), 404)
        except ReportConfigError as exc:
            return _error(str(exc), 409)
        except LedgerError as exc:
            return _error(f"the ledger could not store the bill: {exc}", 503)
        return JSONResponse(bill.to_dict(), status_code=201)

    return [
        Route("/bills/{number}", page),
        Route("/api/v1/bills/{number}", one),
        Route("/api/v1/meters/{meter}/bills", history, methods=["GET", "POST"]),
    ]


def _issue_request(body: bytes) -> dict[str, Any]:
    asked = json.loads(body or b"{}")
    if not isinstance(asked, dict):
        raise ValueError("the body must be a JSON object")
    for key in ("from", "to"):
        if not isinstance(asked.get(key), str):
            raise ValueError(f"{key!r} is missing or not a string")
    for key in ("replaces", "tariff_sha256", "site_timezone"):
        if asked.get(key) is not None and not isinstance(asked[key], str):
            raise ValueError(f"{key!r} must be a string")
    return asked
