"""Local HTTP API and technician page.

Everything is computed on request from the live status and the ledger's
read-only connection, so the web layer holds no state of its own and can
never block the writer.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from gateway.acquisition.modbus import ModbusBus
from gateway.clock import Clock, SystemClock
from gateway.config import GatewayConfig
from gateway.intervals import INTERVAL_S
from gateway.ledger.store import Ledger, UplinkSummary
from gateway.reports.web import report_routes
from gateway.status import GatewayStatus, MeterHealth, UplinkProgress
from gateway.web.auth import WebAuth, denied
from gateway.web.headers import (
    SecurityHeaders,
    content_security_policy,
    security_headers,
    server_error_handler,
    style_hash,
)
from gateway.web.oneoff import one_off_routes
from gateway.web.params import SQLITE_INT_MAX, BadParam, int_param

if TYPE_CHECKING:  # jinja2 and prometheus_client load at the first page view and scrape, not at start
    from jinja2 import Environment
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector

PULL_LIMIT_MAX = 1000

SIGN_IN_PAGE = ("<!doctype html><meta charset=\"utf-8\"><title>Meter gateway</title><h1>Meter gateway</h1>"
                "<p>Open this page as <code>/?token=…</code>: the token is in <code>web.token</code> in the "
                "gateway's data directory. It is swapped for a session cookie at once and removed from the "
                "address. If you just did that, <a href=\"/\">reload the page</a>.</p>")


@dataclass
class WebContext:
    status: GatewayStatus
    ledger: Ledger
    clock: Clock
    token: str
    uplinks: tuple[str, ...]
    buses: Mapping[str, ModbusBus] = field(default_factory=dict)
    config: GatewayConfig | None = None
    profiles_dir: Path | None = None
    """Where one-off reads may find profile files (``[web] profiles_dir``, resolved); None: built-ins only."""
    session_clock: Clock = field(default_factory=SystemClock)
    """Real wall time for browser sessions, whatever ``clock`` the meters run on."""
    auth: WebAuth = field(init=False)

    def __post_init__(self) -> None:
        self.auth = WebAuth(self.token, self.session_clock)


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
        })
    return out


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
    return [_uplink_view(await ctx.ledger.uplink_summary(name), now, ctx.status.uplinks.get(name))
            for name in ctx.uplinks]


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
        if u["dead_credits"]:
            found.append(f"Uplink {u['uplink']}: the billing API refused a batch of {u['dead_credits']} credits "
                         f"({u['last_error']}). Nothing after it is sent until it is accepted (each meter's "
                         "credits must arrive in order); it is offered again at the slowest retry pace. "
                         "Fix the cause at the billing API or in the gateway's config.")
        age = u["oldest_pending_age_s"]
        if age is not None and age > 3600:
            found.append(f"Uplink {u['uplink']}: {u['backlog']} credits waiting, the oldest for {age // 60} min. "
                         f"Last error: {u['last_error']}")
    for meter_status in status.meters.values():
        if meter_status.clock_wrong:
            found.append(f"Meter {meter_status.meter}: meter clock wrong — {meter_status.clock_wrong}. Its readings "
                         "are refused until its clock is right: enable NTP on the meter (or its bridge).")
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


class _StatusCollector:
    """Prometheus metrics computed from the live status at scrape time."""

    def __init__(self, status: GatewayStatus) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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


@functools.cache
def _templates() -> Environment:
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("gateway.web", "templates"), autoescape=select_autoescape())


def _registry(status: GatewayStatus) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=True)
    registry.register(cast("Collector", _StatusCollector(status)))
    return registry


def create_app(ctx: WebContext) -> Starlette:
    registries: list[CollectorRegistry] = []

    def authorised(request: Request) -> bool:
        return ctx.auth.authorised(request)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True, "gateway": ctx.status.gateway_id})

    async def meters(request: Request) -> Response:
        if not authorised(request):
            return denied(request)
        return JSONResponse({"meters": await meters_view(ctx)})

    async def meter(request: Request) -> Response:
        if not authorised(request):
            return denied(request)
        wanted = request.path_params["meter"]
        for m in await meters_view(ctx):
            if m["meter"] == wanted:
                return JSONResponse(m)
        return JSONResponse({"error": f"no meter {wanted!r}"}, status_code=404)

    async def lines(request: Request) -> Response:
        if not authorised(request):
            return denied(request)
        return JSONResponse({"lines": [asdict(line) for line in ctx.status.lines.values()]})

    async def sync(request: Request) -> Response:
        if not authorised(request):
            return denied(request)
        return JSONResponse({"uplinks": await sync_view(ctx), "credits_total": await ctx.ledger.credit_count(),
                             "alarms": dict(ctx.status.alarms)})

    async def credits(request: Request) -> Response:
        """Pull mode: the outbox in order, from a cursor the caller keeps."""
        if not authorised(request):
            return denied(request)
        try:
            after = int_param(request.query_params, "after", lo=0, hi=SQLITE_INT_MAX, default=0)
            limit = int_param(request.query_params, "limit", lo=1, hi=PULL_LIMIT_MAX, default=100)
        except BadParam as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        rows = await ctx.ledger.pull(after, limit)
        page = rows[:limit]
        more = "true" if page and page[-1][0] < ctx.ledger.max_credit_id else "false"
        body = ",".join(f'{{"cursor":{cursor},"item":{wire}}}' for cursor, wire in page)
        next_cursor = page[-1][0] if page else after
        # The stored wire JSON is passed through byte for byte: what was signed is what is served.
        return Response(f'{{"credits":[{body}],"next_cursor":{next_cursor},"more":{more}}}',
                        media_type="application/json")

    async def metrics(request: Request) -> Response:
        if not authorised(request):
            return denied(request)
        from prometheus_client import generate_latest

        if not registries:
            registries.append(_registry(ctx.status))
        return Response(generate_latest(registries[0]), media_type="text/plain; version=0.0.4")

    async def page(request: Request) -> Response:
        candidate = request.query_params.get("token")
        if candidate is not None:
            # The one place a token may come in a URL (a technician's browser, until sign-in exists):
            # swapped at once for a session cookie, and the address cleaned of it.
            if not ctx.auth.token_matches(candidate):
                return HTMLResponse(SIGN_IN_PAGE, status_code=401)
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            response: Response = RedirectResponse("/" + (f"?{urlencode(rest)}" if rest else ""), status_code=303)
            ctx.auth.set_session(response, request)
            return response
        if not authorised(request):
            return HTMLResponse(SIGN_IN_PAGE, status_code=401)
        meter_rows = await meters_view(ctx)
        uplink_rows = await sync_view(ctx)
        now = ctx.clock.now()
        up_s = int(now - ctx.status.started_t)
        html = _templates().get_template("status.html").render(
            s=ctx.status, meters=meter_rows, uplinks=uplink_rows, lines=list(ctx.status.lines.values()),
            problems=_problems(meter_rows, uplink_rows, ctx.status),
            now=_iso(now), uptime=f"{up_s // 3600} h {up_s % 3600 // 60} min",
        )
        return HTMLResponse(html)

    template = resources.files("gateway.web").joinpath("templates/status.html").read_text(encoding="utf-8")
    headers = security_headers(content_security_policy(style_hash(template)))
    return Starlette(middleware=[Middleware(SecurityHeaders, headers=headers)],
                     exception_handlers={500: server_error_handler(headers)}, routes=[
        Route("/", page),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/api/v1/meters", meters),
        Route("/api/v1/meters/{meter}", meter),
        Route("/api/v1/sync", sync),
        Route("/api/v1/credits", credits),
        *one_off_routes(ctx),
        Route("/api/v1/lines", lines),
        *(report_routes(ctx, ctx.config) if ctx.config else []),
    ])
