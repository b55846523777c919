"""Read-only queries on the ledger for the web page, the API, reports and the CLI.

A mixin of :class:`~gateway.ledger.store.Ledger`, on its read-only connection (never blocks the
writer). Every interval query is of one channel: import by default, so a caller that knows of no
channel keeps getting exactly what it got before channels existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from gateway.channels import Channel
from gateway.ledger.connection import rows as _rows


@dataclass(frozen=True, slots=True)
class StoredInterval:
    """An interval as the ledger holds it (the source for bills, exports and the API)."""

    meter: str
    start: int
    end: int
    wh: int
    quality: str
    method: int | None
    reason: int | None
    channel: Channel = Channel.IMPORT
    """The channel it is of: an export interval is feed-in, never consumption."""


class QueriesMixin:
    """Queries for the web and CLI (see :class:`~gateway.ledger.store.Ledger`)."""

    _r: aiosqlite.Connection

    async def last_intervals(self, *, channel: Channel = Channel.IMPORT) -> dict[str, tuple[int, int, str]]:
        """Each meter's newest interval of ``channel``: one index probe per meter, not a scan of the history."""
        out: dict[str, tuple[int, int, str]] = {}
        for meter in await self.meter_ids(channel=channel):
            rows = await _rows(self._r, "SELECT start, wh, quality FROM intervals WHERE meter=? AND channel=? "
                                        "ORDER BY start DESC LIMIT 1", (meter, channel.value))
            if rows:
                out[meter] = (int(rows[0][0]), int(rows[0][1]), str(rows[0][2]))
        return out

    async def intervals(self, meter: str, start: int, end: int, *,
                        channel: Channel = Channel.IMPORT) -> list[tuple[int, int, int, str]]:
        rows = await _rows(self._r,
            'SELECT start, "end", wh, quality FROM intervals WHERE meter=? AND channel=? AND start>=? AND start<? '
            "ORDER BY start", (meter, channel.value, start, end))
        return [(int(a), int(b), int(c), str(d)) for a, b, c, d in rows]

    async def stored_intervals(self, meter: str, start: int, end: int, *,
                               channel: Channel = Channel.IMPORT) -> list[StoredInterval]:
        """Intervals of ``meter``'s ``channel`` starting in [start, end) (Unix seconds), in time order."""
        rows = await _rows(self._r,
            'SELECT meter, start, "end", wh, quality, method, reason FROM intervals '
            "WHERE meter=? AND channel=? AND start>=? AND start<? ORDER BY start", (meter, channel.value, start, end))
        return [StoredInterval(m, int(a), int(b), int(w), str(q), mt, rs, channel)
                for m, a, b, w, q, mt, rs in rows]

    async def meter_ids(self, *, channel: Channel | None = None) -> list[str]:
        """Every meter the ledger has seen (with ``channel``: that has that channel), sorted."""
        if channel is None:
            found = await _rows(self._r, "SELECT DISTINCT meter FROM meters ORDER BY meter")
        else:
            found = await _rows(self._r, "SELECT meter FROM meters WHERE channel=? ORDER BY meter", (channel.value,))
        return [str(m) for (m,) in found]

    async def meter_channels(self) -> list[tuple[str, Channel]]:
        """Every (meter, channel) the ledger has seen, sorted: each is a series of its own."""
        found = await _rows(self._r, "SELECT meter, channel FROM meters ORDER BY meter, channel")
        return [(str(m), Channel(c)) for m, c in found]

    async def credit_count(self, *, channel: Channel | None = None) -> int:
        if channel is None:
            (row,) = await _rows(self._r, "SELECT COUNT(*) FROM credits")
        else:
            (row,) = await _rows(self._r, "SELECT COUNT(*) FROM credits WHERE channel=?", (channel.value,))
        return int(row[0])
