"""Times on the page in the site's zone, with UTC one hover away. Pure: ``now`` is passed in.

A technician compares the page with the clock on the wall and the meter's display, both local; the
API keeps UTC (ISO 8601 with ``Z``) for machines. Every time shown is a ``<time>`` element whose
``datetime`` is UTC and whose ``title`` spells it out, so nothing is lost by showing local time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 90:
        return f"{s} s ago"
    if s < 90 * 60:
        return f"{round(s / 60)} min ago"
    if s < 10 * 3600:
        return f"{s // 3600} h {s % 3600 // 60} min ago"
    if s < 36 * 3600:
        return f"{round(s / 3600)} h ago"
    return f"{round(s / 86400)} days ago"


def duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


@dataclass(frozen=True)
class SiteTime:
    tz: str
    now: float

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, self.zone)

    def text(self, ts: float, *, seconds: bool = False) -> str:
        """"14:05" today, "3 Dec 14:05" another day, "3 Dec 2025 14:05" another year."""
        t = self.local(ts)
        today = self.local(self.now)
        clock = t.strftime("%H:%M:%S" if seconds else "%H:%M")
        if t.date() == today.date():
            return clock
        day = f"{t.day} {t.strftime('%b')}"
        return f"{day} {clock}" if t.year == today.year else f"{day} {t.year} {clock}"

    def when(self, ts: float | str | None, *, seconds: bool = False, relative: bool = False) -> Markup:
        """A ``<time>`` element: local text, UTC in ``datetime`` and ``title``; a dash for None.

        ``ts`` is Unix seconds or an ISO 8601 instant with offset (as the API's views hold them)."""
        if ts is None:
            return Markup("—")
        if isinstance(ts, str):
            ts = datetime.fromisoformat(ts).timestamp()
        iso = utc_iso(ts)
        label = self.text(ts, seconds=seconds)
        if relative:
            label += f" ({ago(self.now - ts)})"
        return Markup('<time datetime="{0}" title="{1} UTC">{2}</time>').format(
            iso, iso[:19].replace("T", " "), escape(label))

    def zone_name(self) -> str:
        """"Europe/Berlin (CET)": the zone and its abbreviation now."""
        return f"{self.tz} ({self.local(self.now).strftime('%Z')})"
