"""A batch's view of its gateway's credits, fetched in a few queries before it is examined (pure).

``cloud_sync.receiver_intake.examine_batch`` asks its :class:`~cloud_sync.receiver_intake.CreditView`
credit by credit. A store on the same machine (SQLite) can answer each question with a query; a
store across a network (PostgreSQL) would pay a round trip per question. So such a store first
fetches everything a batch can ask about — each (meter, channel)'s chain tip, the stored credits
under the batch's (meter, channel, seq) keys, the credits of the batch's quarter-hours — in three
queries, hands
:class:`MemoryView` to ``examine_batch``, and inserts :attr:`MemoryView.added` in one go. Run
inside the transaction that holds the gateway's lock, nothing it fetched can change meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cloud_sync.credit import ChainTip, Credited, channel_of, is_id, is_int64
from cloud_sync.fast_json import dumps_compact, loads_text
from cloud_sync.receiver_intake import echoed_channel

Series = tuple[str, str]
"""(meter, channel): one chain."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """What a batch may ask about: only items whose meter, channel, seq and start are well-formed can ask at all.

    Series are (meter, channel); keys are (meter, channel, seq) and (meter, channel, start).
    """

    series: list[Series]
    keys: list[tuple[str, str, int]]
    starts: list[tuple[str, str, int]]

    def stored_keys(self, tips: dict[Series, ChainTip]) -> list[tuple[str, str, int]]:
        """The keys that can be stored: a series' credits are exactly seq 1..tip (the chain rule)."""
        return [(m, c, s) for m, c, s in self.keys if (m, c) in tips and 1 <= s <= tips[m, c].seq]


def wanted(credits: Iterable[Any]) -> Wanted:
    series: dict[Series, None] = {}
    keys: dict[tuple[str, str, int], None] = {}
    starts: dict[tuple[str, str, int], None] = {}
    for item in credits:
        body = item.get("credit") if type(item) is dict else None
        if type(body) is not dict:
            continue
        meter: Any = body.get("meter")
        seq: Any = body.get("seq")
        start: Any = body.get("start")
        channel = echoed_channel(body)
        if not (is_id(meter) and is_int64(seq)) or channel is None:
            continue
        series[meter, channel] = None
        keys[meter, channel, seq] = None
        if is_int64(start):
            starts[meter, channel, start] = None
    return Wanted(list(series), list(keys), list(starts))


class Row(NamedTuple):
    """A verified credit as a store inserts it (a tuple: one is made per credit, and a frozen
    dataclass's ``__init__`` costs several times a tuple's)."""

    meter: str
    channel: str
    seq: int
    kind: str
    start: int
    wh: int
    hash: str
    wire: str


@dataclass
class MemoryView:
    """:class:`~cloud_sync.receiver_intake.CreditView` over fetched rows, collecting what is added."""

    tips: dict[Series, ChainTip]
    stored_wire: dict[tuple[str, str, int], str]
    history: dict[tuple[str, str, int], list[Credited]]
    added: list[Row] = field(default_factory=list)
    _added_items: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)

    def stored_already(self, item: Any) -> bool:
        """Whether ``item`` names a (meter, channel, seq) stored before this batch: ``examine`` answers
        it without verifying its signature (an identical copy) or rejects it (another), so
        :func:`~cloud_sync.receiver.verify.preverify` leaves it out."""
        if not self.stored_wire:
            return False
        body = item.get("credit") if type(item) is dict else None
        if type(body) is not dict:
            return False
        meter, seq = body.get("meter"), body.get("seq")
        # Only well-formed keys were fetched; anything else (a list for a meter, say) cannot be stored.
        return type(meter) is str and type(seq) is int and (meter, echoed_channel(body), seq) in self.stored_wire

    def stored(self, meter: str, channel: str, seq: int) -> dict[str, Any] | None:
        item = self._added_items.get((meter, channel, seq))
        if item is not None:
            return item
        wire = self.stored_wire.get((meter, channel, seq))
        return loads_text(wire) if wire is not None else None

    def tip(self, meter: str, channel: str) -> ChainTip | None:
        return self.tips.get((meter, channel))

    def credited(self, meter: str, channel: str, start: int) -> Sequence[Credited]:
        return self.history.get((meter, channel, start), ())

    def add(self, body: dict[str, Any], digest: str, item: dict[str, Any]) -> None:
        meter, channel, seq, start = body["meter"], channel_of(body), body["seq"], body["start"]
        self.added.append(Row(meter, channel, seq, body["kind"], start, body["wh"], digest,
                              dumps_compact(item)))
        self._added_items[meter, channel, seq] = item
        self.tips[meter, channel] = ChainTip(seq, digest)
        self.history.setdefault((meter, channel, start), []).append(Credited(seq, body["kind"], body["wh"]))
