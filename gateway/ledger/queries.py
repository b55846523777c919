"""Read-only queries on the ledger for the web page, the API, reports and the CLI.

A mixin of :class:`~gateway.ledger.store.Ledger`, on its read-only connection (never blocks the
writer). Every interval query is of one channel: import by default, so a caller that knows of no
channel keeps getting exactly what it got before channels existed.

The intervals table is keyed by time first, (start, meter, channel) (schema 7: a commit's rows
share the last leaf instead of dirtying one page per meter), and every start lies on the 15-minute
grid. A series' range is therefore read as one primary-key probe per grid step
(:func:`series_intervals_sql`), never as a scan of every meter's rows in the range: a month of
one meter is 2 880 probes whatever the number of meters.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from gateway.channels import Channel
from gateway.ledger.connection import rows as _rows

GRID_S = 900
"""Interval length: every stored interval starts on a multiple of it (schema 7 checks it)."""
GRID_CTE = (
    "WITH RECURSIVE bounds(lo, hi) AS (SELECT "
    f"MAX((CAST(:lo AS INTEGER) + {GRID_S - 1}) / {GRID_S} * {GRID_S}, (SELECT MIN(start) FROM intervals)), "
    "MIN(CAST(:hi AS INTEGER), (SELECT MAX(start) FROM intervals) + 1)), "
    f"grid(s) AS (SELECT lo FROM bounds WHERE lo < hi UNION ALL SELECT s + {GRID_S} FROM grid, bounds "
    f"WHERE s + {GRID_S} < hi) ")
"""The grid steps in [:lo, :hi) (Unix seconds), clipped to the stored range (a query from 1970 on
costs what the ledger holds, not 55 years of steps); use as ``start IN (SELECT s FROM grid)``."""


def series_intervals_sql(columns: str) -> str:
    """``SELECT columns`` of one series' intervals starting in [:lo, :hi), in time order.

    Named parameters: ``lo``, ``hi`` (Unix seconds), ``meter``, ``channel`` (its text).
    """
    return (GRID_CTE + f"SELECT {columns} FROM intervals WHERE start IN (SELECT s FROM grid) "
            "AND meter = :meter AND channel = :channel ORDER BY start")


def series_params(meter: str, channel: Channel, lo: int, hi: int) -> dict[str, object]:
    return {"meter": meter, "channel": channel.value, "lo": lo, "hi": hi}


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
        """Each meter's newest interval of ``channel``: normally one primary-key probe per meter.

        A series' intervals end at its anchor boundary (``meters.anchor_s``), so the newest one starts
        an interval before it: probed by its full key. Should it not be there, the search goes backwards
        from the series' newest reading (an interval closes only once a reading at or past its end has
        come), among that quarter-hour's rows, not through every other meter's rows since.
        """
        out: dict[str, tuple[int, int, str]] = {}
        series = await _rows(self._r, "SELECT meter, anchor_s, MAX(COALESCE(last_t_ms / 1000, 0), "
                                      "COALESCE(anchor_s, 0)) FROM meters WHERE channel=? ORDER BY meter",
                             (channel.value,))
        for meter, anchor_s, newest_s in series:
            rows = []
            if anchor_s is not None:
                rows = await _rows(self._r, "SELECT start, wh, quality FROM intervals WHERE start=? AND meter=? "
                                            "AND channel=?", (int(anchor_s) - GRID_S, meter, channel.value))
            if not rows:
                rows = await _rows(self._r, "SELECT start, wh, quality FROM intervals WHERE start<=? AND meter=? "
                                            "AND channel=? ORDER BY start DESC LIMIT 1",
                                   (int(newest_s), meter, channel.value))
            if rows:
                out[meter] = (int(rows[0][0]), int(rows[0][1]), str(rows[0][2]))
        return out

    async def intervals(self, meter: str, start: int, end: int, *,
                        channel: Channel = Channel.IMPORT) -> list[tuple[int, int, int, str]]:
        rows = await _rows(self._r, series_intervals_sql('start, "end", wh, quality'),
                           series_params(meter, channel, start, end))
        return [(int(a), int(b), int(c), str(d)) for a, b, c, d in rows]

    async def stored_intervals(self, meter: str, start: int, end: int, *,
                               channel: Channel = Channel.IMPORT) -> list[StoredInterval]:
        """Intervals of ``meter``'s ``channel`` starting in [start, end) (Unix seconds), in time order."""
        rows = await _rows(self._r, series_intervals_sql('meter, start, "end", wh, quality, method, reason'),
                           series_params(meter, channel, start, end))
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
