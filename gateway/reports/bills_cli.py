"""``meter-gateway bill … --issue``, ``bill list METER`` and ``bill show NUMBER``: numbered bills at the console.

Issuing writes to the ledger, which has one writer: the daemon. So while the daemon runs (its web API
answers on the config's ``[web]`` address), the bill is issued *by the daemon*, through
``POST /api/v1/meters/{meter}/bills`` with the box's web token; the request carries the SHA-256 of the
tariff and the site zone this config file gives, and the daemon refuses if it runs with others (a tariff
edited but the daemon not restarted), so a bill is never priced under a tariff other than the one the
operator reads in the file. When nothing answers there, the daemon is not running and this command
opens the ledger itself (the daemon's web disabled: SQLite serialises the two writers; the bill's
transaction is a few milliseconds). Listing and showing read the ledger read-only, like ``bill``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import httpx

from gateway import identity
from gateway.billing import BillingPeriod, format_minor
from gateway.billing.money import fraction_to_str
from gateway.config import GatewayConfig, load_config
from gateway.errors import GatewayError, LedgerError
from gateway.ledger.lineage import has_ledger
from gateway.ledger.store import DB_FILE, Ledger
from gateway.reports.bills import (
    BillRefused,
    IssuedBill,
    IssuedBillSummary,
    Verification,
    get_bill,
    issue_bill,
    list_bills,
    tariff_fingerprint,
    verify_bill,
)
from gateway.reports.service import check_meter, tariff_for
from gateway.reports.source import ReadOnlyLedger
from gateway.web.auth import TOKEN_FILE

DAEMON_TIMEOUT_S = 30.0
"""Host seconds the daemon may take to issue: it waits for the ledger's writer, which may be committing
a batch of readings (normally milliseconds; seconds on a slow SD card)."""


class DaemonRefused(GatewayError):
    """The running daemon answered, but not with a bill (its token, or a failure of its own)."""


# ---- text -------------------------------------------------------------------------------------------


def item_line(item: dict[str, Any], minor_units: int) -> str:
    """One line item as the printed bill shows it (``item`` as ``LineItem.to_dict`` gives it)."""
    quantity, unit = Fraction(item["quantity"]), item["unit"]
    if unit == "kWh":
        what = f"{fraction_to_str(quantity)} kWh @ {item['rate']}"
    elif unit == "period":
        what = "" if quantity == 1 else f"× {fraction_to_str(quantity)} period"
    elif unit == "bill":
        what = ""
    else:  # a tax: the rate is a fraction of the subtotal
        what = f"{Decimal(item['rate']) * 100:g} % of {fraction_to_str(quantity)}"
    return f"  {item['label']:<28} {what:<30} {format_minor(item['amount_minor'], minor_units):>12}"


def energy_lines(doc: dict[str, Any]) -> list[str]:
    """Energy imported and, for a bill priced with export data, exported (``doc`` as ``Bill.to_dict``)."""
    lines = [f"Energy {fraction_to_str(Fraction(doc['energy_wh'], 1000))} kWh"]
    if "export_wh" in doc:
        lines.append(f"Exported {fraction_to_str(Fraction(doc['export_wh'], 1000))} kWh")
    return lines


def amount_lines(doc: dict[str, Any]) -> list[str]:
    """The priced lines and the total, as the printed bill shows them (``doc`` as ``Bill.to_dict``).

    A bill with export data shows its charges, a subtotal, the feed-in credit lines and the net amount;
    any other bill is exactly the charges and TOTAL it always had.
    """
    minor, currency = int(doc["minor_units"]), doc["currency"]
    rule = "  " + "-" * 72
    if "net_minor" not in doc:
        return [*(item_line(item, minor) for item in doc["line_items"]), rule,
                f"  {'TOTAL ' + currency:<59} {format_minor(doc['total_minor'], minor):>12}"]
    charges = [item for item in doc["line_items"] if item["kind"] != "feed_in"]
    credits = [item for item in doc["line_items"] if item["kind"] == "feed_in"]
    out = [*(item_line(item, minor) for item in charges), rule,
           f"  {'Charges ' + currency:<59} {format_minor(doc['charges_minor'], minor):>12}"]
    out += [item_line(item, minor) for item in credits]
    if not credits:
        out.append(f"  {'Feed-in credit (no feed-in rate in the tariff)':<59} {format_minor(0, minor):>12}")
    net = doc["net_minor"]
    owed = " (owed to the customer)" if net < 0 else ""
    out += [rule, f"  {'NET AMOUNT ' + currency + owed:<59} {format_minor(net, minor):>12}"]
    return out


def render_issued(bill: IssuedBill, verification: Verification | None = None) -> str:
    doc = bill.content
    period = doc["period"]
    last_day = date.fromordinal(date.fromisoformat(period["end"]).toordinal() - 1)
    cycle = "full billing cycle" if doc["proration"] == "1" else f"prorated {doc['proration']}"
    state = "current" if bill.summary.current else f"REPLACED by {bill.summary.replaced_by}"
    data = doc["data"]
    qualities = ", ".join(f"{q} {n}" for q, n in data["qualities"].items()) or "none"
    lines = [
        f"Bill {bill.number} ({state})",
        f"Meter {doc['meter']}" + (f" (NMI {doc['nmi']})" if doc.get("nmi") else "") + f" — tariff {doc['tariff']}",
        f"Period {period['start']} to {last_day} inclusive ({period['days']} days, {period['tz']}), {cycle}",
        f"Issued {doc['issued_at']} by gateway {doc['gateway']} ({doc['gateway_key']})",
    ]
    if doc.get("replaces"):
        lines.append(f"Replaces {doc['replaces']}")
    lines += [
        *energy_lines(doc),
        "",
        *amount_lines(doc),
        "",
        f"Data: {data['intervals_priced']} of {data['intervals_expected']} intervals priced; qualities: {qualities}",
        f"Intervals sha256 {data['sha256']}; document sha256 {bill.document_sha256}",
    ]
    if "export_data" in doc:
        exported = doc["export_data"]
        lines.append(f"Export data: {exported['intervals_priced']} of {exported['intervals_expected']} intervals "
                     f"priced; sha256 {exported['sha256']}")
    if verification is not None:
        lines.append("Verified: signature, re-pricing and intervals all match" if verification.ok else
                     "NOT VERIFIED: " + "; ".join(verification.problems))
    return "\n".join(lines)


def render_list(meter: str, bills: list[IssuedBillSummary]) -> str:
    if not bills:
        return f"meter {meter} has no issued bills (issue one with: meter-gateway bill {meter} --from … --to … --issue)"
    out = [f"{'number':<34} {'period (inclusive)':<25} {'total':>14}  issued                status"]
    for b in bills:
        state = "current" if b.current else f"replaced by {b.replaced_by}"
        out.append(f"{b.number:<34} {b.period_from} – {b.last_day}  {b.currency + ' ' + b.total:>14}  "
                   f"{b.issued_at:%Y-%m-%d %H:%M}Z  {state}")
    return "\n".join(out)


# ---- issuing ----------------------------------------------------------------------------------------


def _daemon_url(cfg: GatewayConfig) -> str:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(cfg.web.listen, cfg.web.listen)
    return f"http://[{host}]:{cfg.web.port}" if ":" in host else f"http://{host}:{cfg.web.port}"


async def _issue_by_daemon(cfg: GatewayConfig, meter: str, period: BillingPeriod,
                           replaces: str | None) -> dict[str, Any] | None:
    """The bill the running daemon issued, or None when no daemon answers (then issue here)."""
    if not cfg.web.enabled or cfg.web.port == 0:
        return None
    token_path = cfg.data_dir / TOKEN_FILE
    try:
        token = token_path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None  # the daemon never served its web API from this data dir
    except OSError as exc:
        raise LedgerError(f"cannot read the web token {token_path} ({exc.strerror}): run this as the gateway's "
                          "user, who can also write the ledger") from None
    body = {"from": period.start.isoformat(), "to": period.end.isoformat(), "replaces": replaces,
            "tariff_sha256": tariff_fingerprint(cfg, meter), "site_timezone": cfg.site_timezone}
    try:
        async with httpx.AsyncClient(base_url=_daemon_url(cfg), timeout=DAEMON_TIMEOUT_S) as client:
            response = await client.post(f"/api/v1/meters/{meter}/bills", json=body,
                                         headers={"Authorization": f"Bearer {token}"})
    except httpx.ConnectError:
        return None
    except httpx.HTTPError as exc:
        raise DaemonRefused(f"the daemon at {_daemon_url(cfg)} did not answer the bill request: {exc}") from None
    detail = _error_of(response)
    if response.status_code == 201:
        answer: dict[str, Any] = response.json()
        return answer
    if response.status_code in (400, 404, 409):
        raise BillRefused(detail)
    if response.status_code == 401:
        raise DaemonRefused(f"the daemon at {_daemon_url(cfg)} refused the token in {token_path}: is it running "
                            "with this config's data_dir?")
    raise DaemonRefused(f"the daemon at {_daemon_url(cfg)} could not issue the bill ({response.status_code}): {detail}")


def _error_of(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error") or response.text)
    except (ValueError, AttributeError):
        return response.text[:300]


async def _issue_here(cfg: GatewayConfig, meter: str, period: BillingPeriod, replaces: str | None) -> IssuedBill:
    path = cfg.data_dir / DB_FILE
    if not has_ledger(path):
        raise LedgerError(f"no ledger at {path}: check data_dir in the config (the daemon creates the ledger on its "
                          "first start)")
    keypair = identity.load(identity.key_path(cfg.data_dir))
    ledger = await Ledger.open(cfg.data_dir, gateway_id=cfg.gateway_id, keypair=keypair,
                               estimate_gap_s=cfg.intervals.estimate_gap_s, require_own_key=True)
    try:
        return await issue_bill(ledger, cfg, meter, period, keypair=keypair, now=datetime.now(UTC),
                                replaces=replaces)
    finally:
        await ledger.close()


async def issue(cfg: GatewayConfig, meter: str, period: BillingPeriod, replaces: str | None) -> dict[str, Any]:
    """The issued bill as JSON (``IssuedBill.to_dict``), by the daemon when it runs, else here."""
    check_meter(cfg, meter)
    tariff_for(cfg, meter)  # a meter without a tariff is refused before anything is asked of the daemon
    by_daemon = await _issue_by_daemon(cfg, meter, period, replaces)
    if by_daemon is not None:
        return by_daemon
    return (await _issue_here(cfg, meter, period, replaces)).to_dict()


# ---- commands ---------------------------------------------------------------------------------------


def cmd_issue(args: argparse.Namespace, cfg: GatewayConfig, period: BillingPeriod) -> int:
    issued = asyncio.run(issue(cfg, args.meter, period, args.replaces))
    if args.json:
        print(json.dumps(issued, indent=2))
    else:
        bill = asyncio.run(_shown(cfg, issued["number"]))
        print(render_issued(bill[0], bill[1]))
    return 0


async def _shown(cfg: GatewayConfig, number: str) -> tuple[IssuedBill, Verification]:
    async with await ReadOnlyLedger.open(cfg.data_dir) as ledger:
        bill = await get_bill(ledger, number)
        return bill, await verify_bill(ledger, bill)


def cmd_show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    bill, verification = asyncio.run(_shown(cfg, args.name))
    if args.json:
        print(json.dumps({**bill.to_dict(), "verification": verification.to_dict()}, indent=2))
    else:
        print(render_issued(bill, verification))
    return 0


async def _listed(cfg: GatewayConfig, meter: str) -> list[IssuedBillSummary]:
    async with await ReadOnlyLedger.open(cfg.data_dir) as ledger:
        return await list_bills(ledger, meter)


def cmd_list(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    check_meter(cfg, args.name)
    bills = asyncio.run(_listed(cfg, args.name))
    if args.json:
        print(json.dumps({"meter": args.name, "bills": [b.to_dict() for b in bills]}, indent=2))
    else:
        print(render_list(args.name, bills))
    return 0
