"""A batch's view of its gateway's credits, fetched in a few queries before it is examined (pure).

``cloud_sync.receiver_intake.examine_batch`` asks its :class:`~cloud_sync.receiver_intake.CreditView`
credit by credit. A store on the same machine (SQLite) can answer each question with a query; a
store across a network (PostgreSQL) would pay a round trip per question. So such a store first
fetches everything a batch can ask about — each meter's chain tip, the stored credits under the
batch's (meter, seq) pairs, the credits of the batch's quarter-hours — in three queries, hands
:class:`MemoryView` to ``examine_batch``, and inserts :attr:`MemoryView.added` in one go. Run
inside the transaction that holds the gateway's lock, nothing it fetched can change meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloud_sync.credit import ChainTip, Credited, is_id, is_int64


@dataclass(frozen=True, slots=True)
class Wanted:
    """What a batch may ask about: only items whose meter, seq and start are well-formed can ask at all."""

    meters: list[str]
    pairs: list[tuple[str, int]]
    starts: list[tuple[str, int]]

    def stored_pairs(self, tips: dict[str, ChainTip]) -> list[tuple[str, int]]:
        """The pairs that can be stored: a meter's credits are exactly seq 1..tip (the chain rule)."""
        return [(m, s) for m, s in self.pairs if m in tips and 1 <= s <= tips[m].seq]


def wanted(credits: Iterable[Any]) -> Wanted:
    meters: dict[str, None] = {}
    pairs: dict[tuple[str, int], None] = {}
    starts: dict[tuple[str, int], None] = {}
    for item in credits:
        body = item.get("credit") if type(item) is dict else None
        if type(body) is not dict:
            continue
        meter: Any = body.get("meter")
        seq: Any = body.get("seq")
        start: Any = body.get("start")
        if not (is_id(meter) and is_int64(seq)):
            continue
        m, s = meter, seq
        meters[m] = None
        pairs[(m, s)] = None
        if is_int64(start):
            starts[(m, start)] = None
    return Wanted(list(meters), list(pairs), list(starts))


@dataclass(frozen=True, slots=True)
class Row:
    """A verified credit as a store inserts it."""

    meter: str
    seq: int
    kind: str
    start: int
    wh: int
    hash: str
    wire: str


@dataclass
class MemoryView:
    """:class:`~cloud_sync.receiver_intake.CreditView` over fetched rows, collecting what is added."""

    tips: dict[str, ChainTip]
    stored_wire: dict[tuple[str, int], str]
    history: dict[tuple[str, int], list[Credited]]
    added: list[Row] = field(default_factory=list)
    _added_items: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)

    def stored(self, meter: str, seq: int) -> dict[str, Any] | None:
        item = self._added_items.get((meter, seq))
        if item is not None:
            return item
        wire = self.stored_wire.get((meter, seq))
        return json.loads(wire) if wire is not None else None

    def tip(self, meter: str) -> ChainTip | None:
        return self.tips.get(meter)

    def credited(self, meter: str, start: int) -> Sequence[Credited]:
        return self.history.get((meter, start), ())

    def add(self, body: dict[str, Any], digest: str, item: dict[str, Any]) -> None:
        meter, seq, start = body["meter"], body["seq"], body["start"]
        self.added.append(Row(meter, seq, body["kind"], start, body["wh"], digest,
                              json.dumps(item, separators=(",", ":"))))
        self._added_items[(meter, seq)] = item
        self.tips[meter] = ChainTip(seq, digest)
        self.history.setdefault((meter, start), []).append(Credited(seq, body["kind"], body["wh"]))
