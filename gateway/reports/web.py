"""``GET /api/v1/meters/{id}/projection`` and ``GET /api/v1/meters/{id}/intervals`` (JSON, NEM12, Green Button).

Both answer from ``gateway.reports.service`` — the functions ``meter-gateway bill`` and ``export``
use — over the daemon's read-only ledger connection, so the API and the CLI cannot disagree and a
request never blocks the writer.

``from`` and ``to`` of the intervals route accept a local date (``2025-12-01``: local midnight in
the site zone, as on the CLI), an ISO 8601 instant with offset (``2025-12-01T05:00:00Z``), or a
local wall time without offset. The range is half-open ``[from, to)`` by interval start. Defaults:
``from`` = today's local midnight, ``to`` = ``from`` + 1 day. At most ``MAX_RANGE_DAYS`` per
request keeps a response (and the memory behind it) bounded. Bounds outside ``EARLIEST``..``LATEST``
are refused (400) before any date arithmetic can overflow.

``channel`` (``import``, the default, or ``export``) picks the series a JSON answer lists; anything
else is a 400 that names the channels. NEM12 and Green Button answers always carry every channel the
meter has in the range (E1 and B1 streams; flowDirection 1 and 19), because a market file describes
the metering point, not one query.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.billing.period import local_midnight_utc, zone_for
from gateway.channels import UnknownChannelError, parse_channel
from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.reports.service import (
    ReportConfigError,
    UnknownMeter,
    check_meter,
    greenbutton_export,
    meter_projection,
    nem12_export,
)
from gateway.web.auth import denied

if TYPE_CHECKING:  # gateway.web.app mounts these routes, so importing it here at run time would be circular
    from gateway.web.app import WebContext

MAX_RANGE_DAYS = 366
FORMATS = ("json", "nem12", "greenbutton")
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
"""Bounds a ``from``/``to`` may take: far from datetime's limits (years 1 and 9999), which a zone
offset or the default one-day range would otherwise cross (an OverflowError, a 500)."""
MAX_BOUND_LEN = 64


def _error(message: str, status: int) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _config_error(exc: ReportConfigError) -> Response:
    return _error(str(exc), 404 if isinstance(exc, UnknownMeter) else 409)


class BadBound(ValueError):
    """A ``from``/``to`` value that is not a usable date or time; the message says what is expected."""


def parse_bound(text: str, tz: str) -> datetime:
    """A ``from``/``to`` value as a UTC instant (forms in the module docstring); BadBound otherwise."""
    zone = zone_for(tz)
    day: date | None = None
    try:
        if len(text) > MAX_BOUND_LEN:
            raise ValueError(text)
        if len(text) == 10:
            day = date.fromisoformat(text)
            wall = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            instant = datetime.fromisoformat(text)
            wall = instant.replace(tzinfo=UTC)
    except ValueError:
        raise BadBound("from and to must be dates (YYYY-MM-DD, local) or ISO 8601 times") from None
    # Checked on the wall reading, before any zone arithmetic, which near year 1 or 9999 would overflow.
    if not EARLIEST <= wall <= LATEST:
        raise BadBound(f"from and to must lie between {EARLIEST.date()} and {LATEST.date()}")
    if day is not None:
        return local_midnight_utc(day, zone)
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=zone)
    return instant.astimezone(UTC)


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def report_routes(ctx: WebContext, config: GatewayConfig) -> list[Route]:
    """The reporting routes, to be mounted next to ``create_app``'s own."""

    def now() -> datetime:
        return datetime.fromtimestamp(ctx.clock.now(), UTC)

    async def projection(request: Request) -> Response:
        if not ctx.auth.authorised(request):
            return denied(request)
        try:
            result = await meter_projection(ctx.ledger, config, request.path_params["meter"], now())
        except ReportConfigError as exc:
            return _config_error(exc)
        except (GatewayError, ValueError) as exc:
            return _error(f"cannot project: {exc}", 500)
        return JSONResponse(result.to_dict())

    async def intervals(request: Request) -> Response:
        if not ctx.auth.authorised(request):
            return denied(request)
        meter = request.path_params["meter"]
        params = request.query_params
        fmt = params.get("format", "json")
        if fmt not in FORMATS:
            return _error(f"format must be one of {', '.join(FORMATS)}", 400)
        try:
            channel = parse_channel(params.get("channel", "import"))
        except UnknownChannelError as exc:
            return _error(str(exc), 400)
        try:
            check_meter(config, meter)
        except ReportConfigError as exc:
            return _config_error(exc)
        try:
            today = now().astimezone(zone_for(config.site_timezone)).date()
            first = params.get("from", today.isoformat())
            start = parse_bound(first, config.site_timezone)
            if "to" in params:
                end = parse_bound(params["to"], config.site_timezone)
            elif len(first) == 10:  # a local day: up to the next local midnight (23 or 25 h on DST days)
                end = parse_bound((date.fromisoformat(first) + timedelta(days=1)).isoformat(), config.site_timezone)
            else:
                end = start + timedelta(days=1)
        except BadBound as exc:
            return _error(str(exc), 400)
        if not start < end <= start + timedelta(days=MAX_RANGE_DAYS):
            return _error(f"need from < to, at most {MAX_RANGE_DAYS} days apart", 400)
        try:
            if fmt == "nem12":
                text = await nem12_export(ctx.ledger, config, [meter], start, end, created=now())
                return Response(text, media_type="text/csv",
                                headers={"Content-Disposition": f'attachment; filename="{meter}.nem12.csv"'})
            if fmt == "greenbutton":
                xml = await greenbutton_export(ctx.ledger, config, [meter], start, end, created=now())
                return Response(xml, media_type="application/atom+xml")
        except ReportConfigError as exc:
            return _config_error(exc)
        except (GatewayError, ValueError) as exc:
            return _error(f"cannot export: {exc}", 500)
        rows = await ctx.ledger.stored_intervals(meter, int(start.timestamp()), int(end.timestamp()),
                                                 channel=channel)
        return JSONResponse({
            "meter": meter,
            "channel": channel.value,
            "from": start.isoformat().replace("+00:00", "Z"),
            "to": end.isoformat().replace("+00:00", "Z"),
            "tz": config.site_timezone,
            "count": len(rows),
            "total_wh": sum(r.wh for r in rows),
            "intervals": [{"start": _iso(r.start), "end": _iso(r.end), "wh": r.wh, "quality": r.quality,
                           "method": r.method, "reason": r.reason} for r in rows],
        })

    return [
        Route("/api/v1/meters/{meter}/projection", projection),
        Route("/api/v1/meters/{meter}/intervals", intervals),
    ]
