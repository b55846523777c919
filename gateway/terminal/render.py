"""The status page as plain text for a terminal (pure: JSON documents in, lines out).

Same facts as the page, in the same order a technician reads them: is every
meter reading, is every line healthy, is the data leaving the box.
"""

from __future__ import annotations

from typing import Any


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip(), fmt.format(*("-" * w for w in widths)).rstrip(),
            *(fmt.format(*r).rstrip() for r in rows)]


def _s(value: Any, unit: str = "") -> str:
    if value is None or value == "":
        return "-"
    return f"{value}{unit}"


def render(meters: dict[str, Any], lines: dict[str, Any], sync: dict[str, Any]) -> list[str]:
    """Lines of text from /api/v1/meters, /api/v1/lines and /api/v1/sync."""
    out = ["Meters"]
    rows = [[m.get("meter", "?"), _s(m.get("state")), _s(m.get("register_kwh"), " kWh"), _s(m.get("power_w"), " W"),
             _s(m.get("last_reading")), _s(m.get("last_error"))] for m in meters.get("meters", [])]
    out += _table(["meter", "state", "register", "power", "last reading (UTC)", "last error"], rows)
    out += ["", "Lines"]
    rows = [[ln.get("name", "?"), _s(ln.get("endpoint")), "up" if ln.get("connected") else "DOWN",
             f"{ln.get('transactions_per_s', 0):.1f}/s", f"{ln.get('errors_per_s', 0):.2f}/s",
             f"{100 * ln.get('utilisation', 0):.0f} %", _s(ln.get("last_error"))] for ln in lines.get("lines", [])]
    out += _table(["line", "endpoint", "state", "transactions", "errors", "busy", "last error"], rows)
    out += ["", f"Uplinks (credits in the ledger: {sync.get('credits_total', '-')})"]
    rows = [[u.get("uplink", "?"), str(u.get("backlog", "-")), _s(u.get("oldest_pending")),
             _s(u.get("last_success")), _s(u.get("last_error"))] for u in sync.get("uplinks", [])]
    out += _table(["uplink", "backlog", "oldest pending", "last success", "last error"], rows)
    return out
