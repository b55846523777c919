"""Local HTTP API and technician pages.

Everything is computed on request from the live status and the ledger's
read-only connection, so the web layer holds no state of its own (but the
browser sessions and the sign-in throttle, in memory) and can never block the writer.

Pages are rendered on the server and work without script; ``static/charts.js``
(with uPlot, vendored) draws the charts from the JSON routes in :mod:`gateway.web.charts`.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from cloud_sync.keys import Keypair
from gateway.acquisition.modbus import ModbusBus
from gateway.clock import Clock, SystemClock
from gateway.config import GatewayConfig
from gateway.intervals import INTERVAL_S
from gateway.ledger.store import Ledger, UplinkSummary
from gateway.status import GatewayStatus, LineStatus, MeterHealth, UplinkProgress
from gateway.web import advice
from gateway.web.auth import WebAuth, denied
from gateway.web.bills_link import issued_bills
from gateway.web.bills_link import style_sources as bill_styles
from gateway.web.charts import chart_routes, day_window
from gateway.web.deferred import DeferredRoutes
from gateway.web.headers import SecurityHeaders, content_security_policy, security_headers, server_error_handler
from gateway.web.localtime import SiteTime, duration
from gateway.web.login import login_routes, login_url
from gateway.web.meter_view import QUALITY_WORDS, bill_view, interval_rows, kwh, live_rows
from gateway.web.oneoff import one_off_routes
from gateway.web.openapi import openapi_routes
from gateway.web.p2p import p2p_routes
from gateway.web.params import SQLITE_INT_MAX, BadParam, int_param
from gateway.web.sessions import Session, SessionStore, SignInThrottle
from gateway.web.templating import render as render_template
from gateway.web.users import UserStore

if TYPE_CHECKING:  # jinja2 and prometheus_client load at the first page view and scrape, not at start
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector

PULL_LIMIT_MAX = 1000
STATIC_DIR = Path(__file__).parent / "static"
"""The pages' script, styles and vendored uPlot (package data): served by the box itself, no CDN."""
PAGE_REFRESH_S = 30
"""The pages reload themselves this often: fresh enough to watch a meter come back, light on a phone."""


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
    keypair: Keypair | None = None
    """The gateway's key, to sign the bills the daemon issues (``POST /api/v1/meters/{id}/bills``)."""
    session_clock: Clock = field(default_factory=SystemClock)
    """Real wall time for browser sessions, whatever ``clock`` the meters run on."""
    users: UserStore | None = None
    """Technician accounts; by default those in the config's data dir."""
    auth: WebAuth = field(init=False)
    throttle: SignInThrottle = field(init=False, default_factory=SignInThrottle)
    hash_slot: asyncio.Semaphore = field(init=False, default_factory=lambda: asyncio.Semaphore(1))
    """One password check at a time: each holds 19 MiB while it runs."""

    def __post_init__(self) -> None:
        if self.users is None and self.config is not None:
            self.users = UserStore(self.config.data_dir)
        open_to = tuple(ipaddress.ip_network(n) for n in self.config.web.metrics_open_to) if self.config else ()
        self.auth = WebAuth(self.token, self.session_clock, self.users, SessionStore(), open_to)


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
            "values": {name: {"value": v.value, "unit": v.unit, "t": _iso(v.t)}
                       for name, v in sorted(meter.values.items())},
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


def line_view(line: LineStatus) -> dict[str, Any]:
    """A line's figures for the API; its per-minute history is served by the chart route."""
    view = asdict(line)
    view.pop("history")
    return view


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
        why = advice.explain(m["last_error"])
        if m["state"] == MeterHealth.OFFLINE.value:
            found.append(f"Meter {m['meter']} ({m['where']}) is offline: "
                         + (f"{why.summary} {why.action}" if why else "it does not answer."))
        elif m["state"] == MeterHealth.DEGRADED.value:
            found.append(f"Meter {m['meter']} missed its last read: " + (why.summary if why else "no answer."))
        if m["rejected"]:
            reasons = "; ".join(f"{n}× {advice.rejection(r)}" for r, n in m["rejected"].items())
            found.append(f"Meter {m['meter']} had values not used: {reasons}.")
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
    for meter_status in status.meters.values():
        if meter_status.clock_wrong:
            found.append(f"Meter {meter_status.meter}: meter clock wrong — {meter_status.clock_wrong}. Its readings "
                         "are refused until its clock is right: enable NTP on the meter (or its bridge).")
    if status.time_trusted is False:
        found.append(f"Time is not trusted ({status.time_trust_reason}): {status.readings_held} readings are held "
                     "and no interval is closed until it is. Check NTP / network.")
    for line in status.lines.values():
        if line.overloaded and line.achievable_period_s:
            needs = f" (the read plans need {line.needed_period_s:.2f} s)" if line.needed_period_s else ""
            found.append(f"Line {line.name} cannot keep poll_s = {line.poll_period_s:g}{needs}: every meter on it is "
                         f"read about every {line.achievable_period_s:.2f} s. Lengthen poll_s (check-config gives "
                         "the shortest that fits), read fewer quantities, or split the meters over more lines.")
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
        loaded = GaugeMetricFamily("gateway_line_overloaded", "1 while the poll periods do not fit the line",
                                   labels=["line"])
        period = GaugeMetricFamily("gateway_line_achievable_period_seconds",
                                   "poll period the line gives its most often polled meters", labels=["line"])
        for line in s.lines.values():
            util.add_metric([line.name], line.utilisation)
            tps.add_metric([line.name], line.transactions_per_s)
            eps.add_metric([line.name], line.errors_per_s)
            over.add_metric([line.name], line.cycle_overruns)
            loaded.add_metric([line.name], 1.0 if line.overloaded else 0.0)
            if line.achievable_period_s is not None:
                period.add_metric([line.name], line.achievable_period_s)
        yield from (util, tps, eps, over, loaded, period)
        payloads = CounterMetricFamily("gateway_payloads_rejected", "MQTT payloads rejected", labels=["reason"])
        for reason, n in s.payloads_rejected.items():
            payloads.add_metric([reason], n)
        yield payloads
        if (t := s.telemetry) is not None:
            sent = CounterMetricFamily("gateway_telemetry_published", "telemetry messages published", labels=["kind"])
            sent.add_metric(["value"], t.values_published)
            sent.add_metric(["interval"], t.intervals_published)
            yield sent
            yield CounterMetricFamily("gateway_telemetry_values_dropped", "live values dropped (queue full)",
                                      value=t.values_dropped)
            yield CounterMetricFamily("gateway_telemetry_failures", "telemetry connections and publishes that failed",
                                      value=t.failures)
            yield GaugeMetricFamily("gateway_telemetry_intervals_behind", "closed intervals not yet published",
                                    value=t.intervals_behind)


def _registry(status: GatewayStatus) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=True)
    registry.register(cast("Collector", _StatusCollector(status)))
    return registry


def create_app(ctx: WebContext) -> Starlette:
    registries: list[CollectorRegistry] = []

    def authorised(request: Request) -> bool:
        return ctx.auth.authorised(request)

    async def favicon(_: Request) -> Response:
        return Response(status_code=204)  # no icon: an answer all the same, not a 404 in every console

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
        return JSONResponse({"lines": [line_view(line) for line in ctx.status.lines.values()]})

    async def sync(request: Request) -> Response:
        if not authorised(request):
            return denied(request)
        telemetry = asdict(ctx.status.telemetry) if ctx.status.telemetry else None
        return JSONResponse({"uplinks": await sync_view(ctx), "credits_total": await ctx.ledger.credit_count(),
                             "alarms": dict(ctx.status.alarms), "telemetry": telemetry})

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
        if not ctx.auth.metrics_allowed(request):
            return denied(request)
        from prometheus_client import generate_latest

        if not registries:
            registries.append(_registry(ctx.status))
        return Response(generate_latest(registries[0]), media_type="text/plain; version=0.0.4")

    def render(template: str, /, **context: Any) -> str:
        return render_template(template, refresh_s=PAGE_REFRESH_S, **context)

    def site_time() -> SiteTime:
        return SiteTime(ctx.config.site_timezone if ctx.config else "UTC", ctx.clock.now())

    def person(request: Request) -> tuple[Session | None, Response | None]:
        """The signed-in technician, or the answer to give instead (the sign-in form)."""
        session = ctx.auth.session(request)
        if session is not None:
            return session, None
        if ctx.auth.bearer(request):  # a machine client may fetch the pages too
            return None, None
        if "token" in request.query_params:
            return None, RedirectResponse("/login?token=refused", status_code=303)
        return None, RedirectResponse(login_url(request.url.path), status_code=303)

    def common(session: Session | None) -> dict[str, Any]:
        now = ctx.clock.now()
        up_s = int(now - ctx.status.started_t)
        return {"s": ctx.status, "t": site_time(), "session": session, "uptime": duration(up_s),
                "explain": advice.explain, "rejection": advice.rejection, "kwh": kwh, "quality_words": QUALITY_WORDS}

    async def page(request: Request) -> Response:
        session, answer = person(request)
        if answer is not None:
            return answer
        meter_rows = await meters_view(ctx)
        uplink_rows = await sync_view(ctx)
        lines = [(line, advice.explain(line.last_error)) for line in ctx.status.lines.values()]
        html = render("overview.html", **common(session), meters=meter_rows, uplinks=uplink_rows, lines=lines,
                      problems=_problems(meter_rows, uplink_rows, ctx.status))
        return HTMLResponse(html)

    async def meter_page(request: Request) -> Response:
        session, answer = person(request)
        if answer is not None:
            return answer
        wanted = request.path_params["meter"]
        view = next((m for m in await meters_view(ctx) if m["meter"] == wanted), None)
        status = ctx.status.meters.get(wanted)
        if view is None or status is None:
            return HTMLResponse(render("missing.html", **common(session), meter=wanted), status_code=404)
        start, end = day_window(ctx.clock.now())
        intervals = interval_rows(await ctx.ledger.stored_intervals(wanted, start, end))
        html = render("meter.html", **common(session), m=view, status=status, live=live_rows(status.values),
                      problem=advice.explain(status.last_error), intervals=intervals,
                      estimated=sum(i.estimated for i in intervals),
                      bill=await bill_view(ctx.ledger, ctx.config, wanted, ctx.clock.now()),
                      bills=await issued_bills(ctx.ledger, wanted))
        return HTMLResponse(html)

    headers = security_headers(content_security_policy(" ".join(bill_styles())))
    return Starlette(middleware=[Middleware(SecurityHeaders, headers=headers)],
                     exception_handlers={500: server_error_handler(headers)}, routes=[
        Route("/", page),
        Route("/meters/{meter}", meter_page),
        *login_routes(ctx, render),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        *chart_routes(ctx),
        Route("/healthz", healthz),
        Route("/favicon.ico", favicon),
        Route("/metrics", metrics),
        Route("/api/v1/meters", meters),
        Route("/api/v1/meters/{meter}", meter),
        Route("/api/v1/sync", sync),
        Route("/api/v1/credits", credits),
        *one_off_routes(ctx),
        Route("/api/v1/lines", lines),
        *p2p_routes(ctx),
        *openapi_routes(),
        *(_report_routes(ctx).routes() if ctx.config else []),
        *_bill_routes(ctx).routes(),
    ])


REPORT_PATHS = ("/api/v1/meters/{meter}/projection", "/api/v1/meters/{meter}/intervals")
"""gateway.reports.web's routes (loaded at their first request: the billing engine and the exporters)."""
BILL_PATHS = ("/bills/{number}", "/api/v1/bills/{number}", "/api/v1/meters/{meter}/bills")
"""gateway.web.bills' routes (loaded at their first request)."""


def _report_routes(ctx: WebContext) -> DeferredRoutes:
    def build() -> list[BaseRoute]:
        from gateway.reports.web import report_routes

        assert ctx.config is not None
        return list(report_routes(ctx, ctx.config))
    return DeferredRoutes(REPORT_PATHS, build)


def _bill_routes(ctx: WebContext) -> DeferredRoutes:
    def build() -> list[BaseRoute]:
        from gateway.web.bills import bill_routes

        return list(bill_routes(ctx, ctx.config))
    return DeferredRoutes(BILL_PATHS, build)
