"""Local HTTP API and technician page.

Everything is computed on request from the live status and the ledger's
read-only connection, so the web layer holds no state of its own and can
never block the writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from gateway.acquisition.modbus import ModbusBus
from gateway.clock import Clock
from gateway.config import GatewayConfig
from gateway.errors import AcquisitionError, ConfigError, ProfileError
from gateway.intervals import INTERVAL_S
from gateway.ledger.store import Ledger, UplinkSummary
from gateway.profiles import resolve_profile
from gateway.reports.web import report_routes
from gateway.status import GatewayStatus, MeterHealth, UplinkProgress
from gateway.web.auth import COOKIE, denied
from gateway.web.auth import authorised as check_token

PULL_LIMIT_MAX = 1000


ONE_OFF_READ_TIMEOUT_S = 30.0
"""A one-off read waits behind the polls in flight on a slow line; past this, give up."""


@dataclass
class WebContext:
    status: GatewayStatus
    ledger: Ledger
    clock: Clock
    token: str
    uplinks: tuple[str, ...]
    buses: Mapping[str, ModbusBus] = field(default_factory=dict)
    config: GatewayConfig | None = None


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def meters_view(ctx: WebContext) -> list[dict[str, Any]]:
    last = await ctx.ledger.last_intervals()
    out = []
    for meter in sorted(ctx.status.meters.values(), key=lambda m: m.meter):
        interval = last.get(meter.meter)
        out.append({
            "meter": meter.meter,
            "source": meter.source,
            "where": meter.where,
            "profile": meter.profile or None,
            "state": meter.health.value,
            "last_reading": _iso(meter.last_read_t),
            "register_wh": meter.last_register_wh,
            "register_kwh": None if meter.last_register_wh is None else f"{meter.last_register_wh / 1000:.3f}",
            "power_w": None if meter.last_power_w is None else round(meter.last_power_w, 1),
            "last_interval": None if interval is None else {
                "start": _iso(interval[0]), "end": _iso(interval[0] + INTERVAL_S),
                "wh": interval[1], "quality": interval[2]},
            "consecutive_failures": meter.consecutive_failures,
            "reads_ok": meter.reads_ok,
            "reads_failed": meter.reads_failed,
            "rejected": dict(meter.rejected),
            "last_error": meter.last_error,
            **({"stellar": _stellar_account(ctx.status, meter.meter)} if ctx.status.stellar else {}),
        })
    return out


def _stellar_account(status: GatewayStatus, meter: str) -> dict[str, Any]:
    """The meter's custodial Stellar account and its on-chain balance, as the Stellar uplink last read it."""
    assert status.stellar is not None
    a = status.stellar.accounts.get(meter)
    if a is None:
        return {"state": "unknown", "account": None, "serial": None, "balance": None}
    return {"state": a.state, "account": a.account, "serial": a.serial, "balance": a.balance,
            "asset": status.stellar.asset, "balance_read_at": _iso(a.balance_t), "detail": a.detail}


def _stellar_view(status: GatewayStatus) -> dict[str, Any]:
    st = status.stellar
    assert st is not None
    return {"horizon_url": st.horizon_url, "gateway_account": st.gateway_account, "asset": st.asset,
            "rate_per_wh": st.rate, "pending_tx": st.pending_tx, "latest_ledger": st.latest_ledger,
            "gateway_xlm": st.xlm_balance, "allowance_left": st.asset_balance, "waiting_for_account": st.waiting_for,
            "payments_since_start": st.payments,
            "accounts": {state: sum(1 for a in st.accounts.values() if a.state == state)
                         for state in sorted({a.state for a in st.accounts.values()})}}


def _uplink_view(u: UplinkSummary, now: float, progress: UplinkProgress | None) -> dict[str, Any]:
    rate = progress.rate_per_s if progress else 0.0
    return {
        "uplink": u.uplink,
        "backlog": u.backlog,
        "oldest_pending": _iso(u.oldest_pending_ms / 1000) if u.oldest_pending_ms else None,
        "oldest_pending_age_s": round(now - u.oldest_pending_ms / 1000) if u.oldest_pending_ms else None,
        "last_success": _iso(u.last_success_ms / 1000) if u.last_success_ms else None,
        "last_error": u.last_error,
        "last_error_at": _iso(u.last_error_ms / 1000) if u.last_error_ms else None,
        "dead_batches": u.dead_batches,
        "dead_credits": u.dead_credits,
        "delivered_since_start": progress.delivered if progress else 0,
        "drain_rate_per_s": round(rate, 1),
        "drain_eta_s": round(u.backlog / rate) if rate > 0 and u.backlog else None,
    }


async def sync_view(ctx: WebContext) -> list[dict[str, Any]]:
    now = ctx.clock.now()
    views = [_uplink_view(await ctx.ledger.uplink_summary(name), now, ctx.status.uplinks.get(name))
             for name in ctx.uplinks]
    for view in views:
        if view["uplink"] == "stellar" and ctx.status.stellar is not None:
            view["stellar"] = _stellar_view(ctx.status)
    return views


def _problems(meters: list[dict[str, Any]], uplinks: list[dict[str, Any]], status: GatewayStatus) -> list[str]:
    found = []
    for m in meters:
        if m["state"] == MeterHealth.OFFLINE.value:
            found.append(f"Meter {m['meter']} ({m['where']}) is offline: {m['last_error']}. "
                         "Check wiring, power, unit id and serial settings.")
        elif m["state"] == MeterHealth.DEGRADED.value:
            found.append(f"Meter {m['meter']} missed its last read: {m['last_error']}.")
        if m["rejected"]:
            found.append(f"Meter {m['meter']} had values rejected: {m['rejected']}.")
    for u in uplinks:
        if u["dead_credits"] and u["uplink"] == "stellar":
            found.append(f"Uplink stellar: a batch of {u['dead_credits']} credits is dead-lettered "
                         f"({u['last_error']}). It stays first in line and is retried at the slowest pace, "
                         "so no balance skips a credit.")
        elif u["dead_credits"]:
            found.append(f"Uplink {u['uplink']}: the billing API refused a batch of {u['dead_credits']} credits "
                         f"({u['last_error']}). Nothing after it is sent until it is accepted (each meter's "
                         "credits must arrive in order); it is offered again at the slowest retry pace. "
                         "Fix the cause at the billing API or in the gateway's config.")
        age = u["oldest_pending_age_s"]
        if age is not None and age > 3600:
            found.append(f"Uplink {u['uplink']}: {u['backlog']} credits waiting, the oldest for {age // 60} min. "
                         f"Last error: {u['last_error']}")
    if status.time_trusted is False:
        found.append(f"Time is not trusted ({status.time_trust_reason}): {status.readings_held} readings are held "
                     "and no interval is closed until it is. Check NTP / network.")
    for alarm in status.alarms.values():
        found.append(alarm)
    if status.mqtt_connected is False:
        found.append("The MQTT broker is not reachable; MQTT meters are not being read.")
    if status.commit_errors:
        found.append(f"The ledger failed to commit {status.commit_errors} times: check the SD card and free space.")
    return found


class _StatusCollector(Collector):
    """Prometheus metrics computed from the live status at scrape time."""

    def __init__(self, status: GatewayStatus) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        s = self._status
        up = GaugeMetricFamily("gateway_meter_up", "1 if the meter's last read succeeded", labels=["meter"])
        fails = GaugeMetricFamily("gateway_meter_consecutive_failures", "failed reads in a row", labels=["meter"])
        ok = CounterMetricFamily("gateway_meter_reads", "successful meter reads", labels=["meter"])
        bad = CounterMetricFamily("gateway_meter_read_failures", "failed meter reads", labels=["meter"])
        rej = CounterMetricFamily("gateway_values_rejected", "values rejected", labels=["meter", "reason"])
        for m in s.meters.values():
            up.add_metric([m.meter], 1.0 if m.health is MeterHealth.ONLINE else 0.0)
            fails.add_metric([m.meter], m.consecutive_failures)
            ok.add_metric([m.meter], m.reads_ok)
            bad.add_metric([m.meter], m.reads_failed)
            for reason, n in m.rejected.items():
                rej.add_metric([m.meter, reason], n)
        yield from (up, fails, ok, bad, rej)
        yield CounterMetricFamily("gateway_readings_committed", "readings committed to the ledger",
                                  value=s.readings_committed)
        yield CounterMetricFamily("gateway_credits_created", "credits created", value=s.credits_created)
        util = GaugeMetricFamily("gateway_line_utilisation", "busy fraction of wall time", labels=["line"])
        tps = GaugeMetricFamily("gateway_line_transactions_per_second", "recent transaction rate", labels=["line"])
        eps = GaugeMetricFamily("gateway_line_errors_per_second", "recent error rate", labels=["line"])
        over = CounterMetricFamily("gateway_line_cycle_overruns", "polls that missed their slot", labels=["line"])
        for line in s.lines.values():
            util.add_metric([line.name], line.utilisation)
            tps.add_metric([line.name], line.transactions_per_s)
            eps.add_metric([line.name], line.errors_per_s)
            over.add_metric([line.name], line.cycle_overruns)
        yield from (util, tps, eps, over)
        payloads = CounterMetricFamily("gateway_payloads_rejected", "MQTT payloads rejected", labels=["reason"])
        for reason, n in s.payloads_rejected.items():
            payloads.add_metric([reason], n)
        yield payloads


def create_app(ctx: WebContext) -> Starlette:
    templates = Environment(loader=PackageLoader("gateway.web", "templates"), autoescape=select_autoescape())
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_StatusCollector(ctx.status))

    def authorised(request: Request) -> bool:
        return check_token(request, ctx.token)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True, "gateway": ctx.status.gateway_id})

    async def meters(request: Request) -> Response:
        if not authorised(request):
            return denied()
        return JSONResponse({"meters": await meters_view(ctx)})

    async def meter(request: Request) -> Response:
        if not authorised(request):
            return denied()
        wanted = request.path_params["meter"]
        for m in await meters_view(ctx):
            if m["meter"] == wanted:
                return JSONResponse(m)
        return JSONResponse({"error": f"no meter {wanted!r}"}, status_code=404)

    async def lines(request: Request) -> Response:
        if not authorised(request):
            return denied()
        return JSONResponse({"lines": [asdict(line) for line in ctx.status.lines.values()]})

    async def sync(request: Request) -> Response:
        if not authorised(request):
            return denied()
        return JSONResponse({"uplinks": await sync_view(ctx), "credits_total": await ctx.ledger.credit_count()})

    async def credits(request: Request) -> Response:
        """Pull mode: the outbox in order, from a cursor the caller keeps."""
        if not authorised(request):
            return denied()
        try:
            after = int(request.query_params.get("after", "0"))
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            return JSONResponse({"error": "after and limit must be integers"}, status_code=400)
        if after < 0 or not 1 <= limit <= PULL_LIMIT_MAX:
            return JSONResponse({"error": f"need after >= 0 and 1 <= limit <= {PULL_LIMIT_MAX}"}, status_code=400)
        rows = await ctx.ledger.pull(after, limit)
        page = rows[:limit]
        more = "true" if page and page[-1][0] < ctx.ledger.max_credit_id else "false"
        body = ",".join(f'{{"cursor":{cursor},"item":{wire}}}' for cursor, wire in page)
        next_cursor = page[-1][0] if page else after
        # The stored wire JSON is passed through byte for byte: what was signed is what is served.
        return Response(f'{{"credits":[{body}],"next_cursor":{next_cursor},"more":{more}}}',
                        media_type="application/json")

    async def bus_read(request: Request) -> Response:
        """One-off read of every quantity of a device, through the bus's scheduler (never beside it)."""
        if not authorised(request):
            return denied()
        bus = ctx.buses.get(request.path_params["bus"])
        if bus is None:
            return JSONResponse({"error": f"no bus {request.path_params['bus']!r}; buses: {sorted(ctx.buses)}"},
                                status_code=404)
        try:
            unit = int(request.query_params["unit"])
            profile = resolve_profile(request.query_params["profile"])
        except (KeyError, ValueError):
            return JSONResponse({"error": "need ?unit=N&profile=ID"}, status_code=400)
        except ProfileError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            async with asyncio.timeout(ONE_OFF_READ_TIMEOUT_S):
                values, problems = await bus.read_values(unit, profile)
        except ConfigError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except (AcquisitionError, TimeoutError) as exc:
            return JSONResponse({"error": f"read failed: {exc or 'timed out'}"}, status_code=502)
        return JSONResponse({"bus": bus.cfg.name, "unit": unit, "profile": profile.id, "values": values,
                             "problems": problems})

    async def metrics(request: Request) -> Response:
        if not authorised(request):
            return denied()
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    async def page(request: Request) -> Response:
        if not authorised(request):
            return HTMLResponse("<h1>Meter gateway</h1><p>Open this page with <code>?token=…</code>: the token is in "
                                "<code>web.token</code> in the gateway's data directory.</p>", status_code=401)
        meter_rows = await meters_view(ctx)
        uplink_rows = await sync_view(ctx)
        now = ctx.clock.now()
        up_s = int(now - ctx.status.started_t)
        html = templates.get_template("status.html").render(
            s=ctx.status, meters=meter_rows, uplinks=uplink_rows, lines=list(ctx.status.lines.values()),
            problems=_problems(meter_rows, uplink_rows, ctx.status),
            now=_iso(now), uptime=f"{up_s // 3600} h {up_s % 3600 // 60} min",
        )
        response = HTMLResponse(html)
        if request.query_params.get("token"):
            response.set_cookie(COOKIE, ctx.token, httponly=True, samesite="strict")
        return response

    return Starlette(routes=[
        Route("/", page),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/api/v1/meters", meters),
        Route("/api/v1/meters/{meter}", meter),
        Route("/api/v1/sync", sync),
        Route("/api/v1/credits", credits),
        Route("/api/v1/buses/{bus}/read", bus_read),
        Route("/api/v1/lines", lines),
        *(report_routes(ctx, ctx.config) if ctx.config else []),
    ])
