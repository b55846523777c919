"""When an agreement gets its delivery record, and what it says — pure, no I/O, no clock.

The contract takes whole kWh (``energy_delivered_kwh: u64``); meters measure Wh. So energy is
counted per provider meter as a chain of agreements, in the order the planner takes them
(window start, then agreement id), each starting where the previous one stopped:

* an agreement counts the meter's *export* intervals lying wholly inside its window
  ``[start, deadline]`` and not counted by an earlier agreement (``start >= carry.until``), in time
  order, plus the ``carry`` the previous agreement left;
* **quantity reached**: as soon as the running total reaches the agreed kWh × 1000, the record is
  made with exactly the agreed kWh (the contract refuses more: ``ExcessiveDelivery``); the Wh of the
  last interval beyond it are the remainder;
* **deadline passed** (``now >= deadline``): the record covers every interval counted and delivers
  ``total // 1000`` kWh; the Wh below a whole kWh are the remainder. Zero kWh makes a record too
  (``kwh == 0``: nothing to send, the contract refuses zero) so the chain moves on;
* the **remainder is never rounded away**: it is the record's ``carry_out_wh`` and the next
  agreement of the same provider meter starts with it (``carry_in_wh``). Energy is conserved
  along the chain: ``carry_in + Σ covered Wh = kWh × 1000 + carry_out`` for every record.

An interval is never split between agreements (its credit is the unit the record cites).
Intervals of the window that arrive after the record was made (a meter offline past the
deadline) are not delivered by anyone: they stay ordinary export (feed-in on the bill).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

WH_PER_KWH: Final = 1000
QUANTITY: Final = "quantity"
DEADLINE: Final = "deadline"


@dataclass(frozen=True, slots=True)
class ExportInterval:
    """One export interval of the provider meter, with the credit that attests it."""

    start: int
    end: int
    wh: int
    register_end_wh: int
    """The export register at the interval's end, whole Wh."""
    seq: int
    """The interval's credit: (meter, 'export', seq)."""
    credit_hash: str


@dataclass(frozen=True, slots=True)
class Terms:
    agreement_id: int
    kwh: int
    start: int
    deadline: int


@dataclass(frozen=True, slots=True)
class Carry:
    """What the provider meter's previous record left: Wh beyond its whole kWh, and where it stopped."""

    wh: int = 0
    until: int = 0
    """Intervals starting before this were counted by an earlier agreement."""
    register_wh: int = 0
    """The export register where it stopped (the reading of a record that covers nothing new)."""


@dataclass(frozen=True, slots=True)
class Decision:
    agreement_id: int
    kwh: int
    reason: str
    covered: tuple[ExportInterval, ...]
    carry_in_wh: int
    carry_out_wh: int
    meter_reading_wh: int
    """The export register at delivery: the end of the last covered interval."""
    until: int
    """Where the provider meter's chain stands after this record (the last covered interval's end)."""

    @property
    def covered_wh(self) -> int:
        return sum(i.wh for i in self.covered)

    @property
    def carry(self) -> Carry:
        """What the provider meter's next agreement starts from."""
        return Carry(self.carry_out_wh, self.until, self.meter_reading_wh)


def eligible(terms: Terms, intervals: Iterable[ExportInterval], carry: Carry) -> list[ExportInterval]:
    """The intervals this agreement may count, in time order."""
    lo = max(terms.start, carry.until)
    return sorted((i for i in intervals if i.start >= lo and i.end <= terms.deadline), key=lambda i: i.start)


def plan(terms: Terms, intervals: Iterable[ExportInterval], carry: Carry, now: float) -> Decision | None:
    """The agreement's delivery record if it is due now, else None (keep waiting for intervals)."""
    target = terms.kwh * WH_PER_KWH
    total = carry.wh
    taken: list[ExportInterval] = []
    for interval in eligible(terms, intervals, carry):
        taken.append(interval)
        total += interval.wh
        if total >= target:
            return _decision(terms, terms.kwh, QUANTITY, taken, carry, total)
    if now < terms.deadline:
        return None
    return _decision(terms, min(terms.kwh, total // WH_PER_KWH), DEADLINE, taken, carry, total)


def _decision(terms: Terms, kwh: int, reason: str, taken: Sequence[ExportInterval], carry: Carry,
              total: int) -> Decision:
    # Nothing new counted: the next agreement starts where this meter's chain already stood.
    reading = taken[-1].register_end_wh if taken else carry.register_wh
    until = taken[-1].end if taken else carry.until
    return Decision(terms.agreement_id, kwh, reason, tuple(taken), carry.wh, total - kwh * WH_PER_KWH, reading, until)


def order(terms: Iterable[Terms]) -> list[Terms]:
    """The order a provider meter's agreements are taken in: window start, then id."""
    return sorted(terms, key=lambda t: (t.start, t.agreement_id))
