"""The demo's final check: what the reference receiver holds against the simulated meters' true registers.

Per (meter, channel): a channel's credits are a series of their own (their own seq and chain), and
each is compared with its own register — import with the meter's import register, export with its
export register — so a Wh that went to the wrong channel shows as a mismatch on both.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.channels import Channel
from gateway.sim.load import LoadModel


def receiver_series(receiver_db: Path) -> dict[tuple[str, Channel], list[dict[str, Any]]]:
    """Credits the reference receiver holds, per (meter, channel), in seq order (v1 credits are import)."""
    out: dict[tuple[str, Channel], list[dict[str, Any]]] = {}
    with contextlib.closing(sqlite3.connect(receiver_db)) as db:
        for meter, wire in db.execute("SELECT meter, wire FROM credits ORDER BY meter, seq"):
            credit = json.loads(wire)["credit"]
            out.setdefault((meter, Channel(credit.get("channel", "import"))), []).append(credit)
    return out


def register_of(model: LoadModel, channel: Channel) -> Callable[[float], int]:
    return model.export_wh if channel is Channel.EXPORT else model.import_wh


def series_report(credits: list[dict[str, Any]], register: Callable[[float], int]) -> dict[str, Any]:
    """One series' energy credited between two instants against its true register delta between them.

    The two instants are the first and the last interval boundary whose register value is the
    meter's true register there, i.e. a boundary the gateway read rather than interpolated
    between the readings around it (it does that when a poll is missed: a box too busy, the
    last readings lost in a power cut). Energy around an interpolated boundary is only shared
    differently between its two intervals, so between read boundaries the sum must match to the
    Wh; ``trimmed`` says how many intervals lay outside at each end. Corrections (``kind``
    "correction": a signed change to an earlier credit, with that interval's new register
    values) count in the sum of the interval they correct.
    """
    latest: dict[int, dict[str, Any]] = {}  # interval start -> its newest credit (register values)
    energy: dict[int, int] = {}
    for c in credits:
        latest[c["start"]] = c
        energy[c["start"]] = energy.get(c["start"], 0) + c["wh"]
    starts = sorted(latest)
    ends = [latest[t]["end"] for t in starts]
    read = [t for t in starts if latest[t]["register_start_wh"] == register(t)]
    read += [e for t, e in zip(starts, ends, strict=True) if latest[t]["register_end_wh"] == register(e)]
    first, last = (min(read), max(read)) if read else (starts[0], starts[0])
    total = sum(energy[t] for t in starts if first <= t < last)
    delta = register(last) - register(first)
    seqs = [c["seq"] for c in credits]
    return {
        "credits": len(credits), "first_seq": seqs[0], "last_seq": seqs[-1],
        "contiguous": seqs == list(range(seqs[0], seqs[0] + len(seqs))),
        "gapless": all(e == s for e, s in zip(ends, starts[1:], strict=False)),
        "corrections": sum(1 for c in credits if c.get("kind", "interval") == "correction"),
        "from": first, "to": last, "credited_wh": total, "register_delta_wh": delta,
        "trimmed": (sum(1 for t in starts if t < first), sum(1 for t in starts if t >= last)),
        "exact": bool(read) and last > first and total == delta,
    }


def check_series(receiver_db: Path, truth: Mapping[str, LoadModel]) -> dict[tuple[str, Channel], dict[str, Any]]:
    """Per (meter, channel): :func:`series_report` against that channel's true register."""
    return {(meter, channel): series_report(credits, register_of(truth[meter], channel))
            for (meter, channel), credits in receiver_series(receiver_db).items()}
