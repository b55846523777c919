"""The charts' data as JSON: a meter's last 24 h and billing period, a line's last six hours.

The page's script (``static/charts.js``) draws them; the CSP allows no inline script, so the data
comes from these routes, which API clients may use as well. Series are columnar (one array of slot
times, one array per value) with ``null`` where nothing is stored, so a meter that stopped shows as
an empty stretch up to now rather than a line drawn across the gap. Energy comes per channel
(``import`` always; ``export`` a second key when the ledger holds export intervals in the window),
each slot with its NEM12 quality so estimated and substituted values are drawn apart from actual ones.
``count`` and ``estimated`` stay the import channel's, as before; the export channel carries its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.billing import expected_intervals, local_midnight_utc
from gateway.channels import Channel
from gateway.intervals import INTERVAL_S
from gateway.ledger.store import StoredInterval
from gateway.status import LINE_HISTORY_BUCKET_S, LINE_HISTORY_BUCKETS, LineStatus
from gateway.web.auth import denied

if TYPE_CHECKING:  # gateway.web.app mounts these routes; importing it at run time would be circular
    from gateway.web.app import WebContext

DAY_S = 86_400
NULL_QUALITY = "N"


def day_window(now: float) -> tuple[int, int]:
    """The 96 interval slots ending with the one in progress at ``now``."""
    end = int(now) - int(now) % INTERVAL_S + INTERVAL_S
    return end - DAY_S, end


def _slots(rows: Sequence[StoredInterval], slots: Sequence[int]) -> dict[str, Any]:
    by_start = {r.start: r for r in rows if r.quality != NULL_QUALITY}
    wh = [by_start[s].wh if s in by_start else None for s in slots]
    quality = [by_start[s].quality if s in by_start else None for s in slots]
    return {"unit": "Wh", "wh": wh, "quality": quality}


def _estimated() -> frozenset[str]:
    """The estimated qualities; imported at the first chart: gateway.export's package loads its exporters."""
    from gateway.export.model import ESTIMATED_QUALITIES

    return ESTIMATED_QUALITIES


def interval_series(rows: Sequence[StoredInterval], start: int, end: int,
                    export_rows: Sequence[StoredInterval] = ()) -> dict[str, Any]:
    """One slot per interval in ``[start, end)``: Wh and quality, ``None`` where nothing is stored."""
    slots = list(range(start, end, INTERVAL_S))
    channels = {Channel.IMPORT.value: _slots(rows, slots)}
    if export_rows:
        exported = _slots(export_rows, slots)
        channels[Channel.EXPORT.value] = {
            **exported, "count": sum(q is not None for q in exported["quality"]),
            "estimated": sum(q in _estimated() for q in exported["quality"])}
    quality = channels[Channel.IMPORT.value]["quality"]
    return {
        "t": slots,
        "channels": channels,
        "count": sum(q is not None for q in quality),
        "estimated": sum(q in _estimated() for q in quality),
    }


def daily_series(rows: Sequence[StoredInterval], days: Sequence[tuple[str, int, int, int]],
                 today_end: int, export_rows: Sequence[StoredInterval] = ()) -> dict[str, Any]:
    """Per local day (``(date, start, end, expected intervals)``): Wh, of which estimated, intervals present.

    Days that have not begun are ``None``; a day with no interval stored is 0 intervals and ``None`` Wh.
    """
    channels = {Channel.IMPORT.value: _days(rows, days, today_end)}
    if export_rows:
        channels[Channel.EXPORT.value] = _days(export_rows, days, today_end)
    return {
        "days": [d for d, *_ in days],
        "t": [start for _, start, _, _ in days],
        "expected": [n for *_, n in days],
        "channels": channels,
    }


def _days(rows: Sequence[StoredInterval], days: Sequence[tuple[str, int, int, int]],
          today_end: int) -> dict[str, Any]:
    wh: list[int | None] = []
    estimated: list[int | None] = []
    present: list[int | None] = []
    for _, start, end, _ in days:
        if start >= today_end:
            wh.append(None)
            estimated.append(None)
            present.append(None)
            continue
        inside = [r for r in rows if start <= r.start < end and r.quality != NULL_QUALITY]
        wh.append(sum(r.wh for r in inside) if inside else None)
        estimated.append(sum(r.wh for r in inside if r.quality in _estimated()) if inside else None)
        present.append(len(inside))
    return {"unit": "Wh", "wh": wh, "estimated_wh": estimated, "intervals": present}


def line_series(line: LineStatus, now: float) -> dict[str, Any]:
    """Per minute over the last six hours: transactions and errors (0 for a minute without any)."""
    end = int(now) - int(now) % LINE_HISTORY_BUCKET_S + LINE_HISTORY_BUCKET_S
    start = end - LINE_HISTORY_BUCKETS * LINE_HISTORY_BUCKET_S
    counts = {minute: (n, errors) for minute, n, errors in line.history if start <= minute < end}
    slots = list(range(start, end, LINE_HISTORY_BUCKET_S))
    return {
        "line": line.name,
        "bucket_s": LINE_HISTORY_BUCKET_S,
        "t": slots,
        "transactions": [counts.get(s, (0, 0))[0] for s in slots],
        "errors": [counts.get(s, (0, 0))[1] for s in slots],
    }


def chart_routes(ctx: WebContext) -> list[Route]:
    def error(message: str, status: int) -> Response:
        return JSONResponse({"error": message}, status_code=status)

    def known(meter: str) -> bool:
        return meter in ctx.status.meters or (ctx.config is not None and ctx.config.meter(meter) is not None)

    async def meter_day(request: Request) -> Response:
        if not ctx.auth.authorised(request):
            return denied(request)
        meter = request.path_params["meter"]
        if not known(meter):
            return error(f"no meter {meter!r}", 404)
        now = ctx.clock.now()
        start, end = day_window(now)
        rows = await ctx.ledger.stored_intervals(meter, start, end)
        exported = await ctx.ledger.stored_intervals(meter, start, end, channel=Channel.EXPORT)
        tz = ctx.config.site_timezone if ctx.config else "UTC"
        return JSONResponse({"meter": meter, "tz": tz, "interval_s": INTERVAL_S, "from": start, "to": end,
                             "now": now, **interval_series(rows, start, end, exported)})

    async def meter_period(request: Request) -> Response:
        if not ctx.auth.authorised(request):
            return denied(request)
        meter = request.path_params["meter"]
        if ctx.config is None or not known(meter):
            return error(f"no meter {meter!r}", 404)
        from gateway.reports.service import period_containing  # the reports load at first use, not at start

        now = ctx.clock.now()
        period = period_containing(ctx.config, datetime.fromtimestamp(now, UTC))
        zone = period.zone
        days = []
        for day in period.dates():
            start = int(local_midnight_utc(day, zone).timestamp())
            end = int(local_midnight_utc(day + timedelta(days=1), zone).timestamp())
            days.append((day.isoformat(), start, end, expected_intervals(day, zone)))
        rows = await ctx.ledger.stored_intervals(meter, days[0][1], days[-1][2])
        exported = await ctx.ledger.stored_intervals(meter, days[0][1], days[-1][2], channel=Channel.EXPORT)
        return JSONResponse({"meter": meter, "tz": ctx.config.site_timezone, "now": now,
                             "period": {"start": period.start.isoformat(), "end": period.end.isoformat()},
                             **daily_series(rows, days, int(now), exported)})

    async def line_history(request: Request) -> Response:
        if not ctx.auth.authorised(request):
            return denied(request)
        name = request.path_params["line"]
        line = ctx.status.lines.get(name)
        if line is None:
            return error(f"no line {name!r}; lines: {sorted(ctx.status.lines)}", 404)
        tz = ctx.config.site_timezone if ctx.config else "UTC"
        return JSONResponse({"tz": tz, **line_series(line, ctx.clock.now())})

    return [
        Route("/api/v1/charts/meters/{meter}/day", meter_day),
        Route("/api/v1/charts/meters/{meter}/period", meter_period),
        Route("/api/v1/charts/lines/{line}", line_history),
    ]
