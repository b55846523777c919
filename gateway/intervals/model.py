"""The interval engine's data: grades, intervals, and runs of intervals (pure).

A :class:`Run` is what moving from one reading to the next closes: every
interval whose end boundary lies between the two readings. It is a
description, not a list — its intervals are computed on demand, one by one,
from the two readings and the boundary before them — so a reading after a
month-long outage costs the engine no more than any other reading, and the
ledger writes the month's intervals in bounded slices (see
:mod:`gateway.ledger.ingest`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from gateway.channels import Channel

INTERVAL_S = 900
INTERVAL_MS = INTERVAL_S * 1000
DEFAULT_ESTIMATE_GAP_MS = 3_600_000

METHOD_ESTIMATE_LINEAR = 54
METHOD_SUBSTITUTE_LINEAR = 17
REASON_COMMS_FAULT = 76
REASON_READ_BELOW_PREVIOUS = 18


class Quality(StrEnum):
    """Interval quality in NEM12 terms."""

    ACTUAL = "A"
    ESTIMATED = "E"
    SUBSTITUTED = "S"


_BADNESS = {Quality.ACTUAL: 0, Quality.ESTIMATED: 1, Quality.SUBSTITUTED: 2}


@dataclass(frozen=True, slots=True)
class Grade:
    """How a boundary value (and so an interval) was obtained."""

    quality: Quality = Quality.ACTUAL
    method: int | None = None
    reason: int | None = None

    def worse(self, other: Grade) -> Grade:
        return other if _BADNESS[other.quality] > _BADNESS[self.quality] else self

    def encode(self) -> str:
        """Compact text for storage: ``A``, ``E54/76``, ``S17/18``."""
        if self.quality is Quality.ACTUAL:
            return "A"
        return f"{self.quality.value}{self.method or ''}/{self.reason or ''}"

    @classmethod
    def decode(cls, text: str | None) -> Grade:
        if not text or text == "A":
            return ACTUAL
        method, _, reason = text[1:].partition("/")
        return cls(Quality(text[0]), int(method) if method else None, int(reason) if reason else None)


ACTUAL = Grade()
ESTIMATED_GAP = Grade(Quality.ESTIMATED, METHOD_ESTIMATE_LINEAR, REASON_COMMS_FAULT)
SUBSTITUTED_GAP = Grade(Quality.SUBSTITUTED, METHOD_SUBSTITUTE_LINEAR, REASON_COMMS_FAULT)
EPOCH_CHANGE = Grade(Quality.SUBSTITUTED, METHOD_SUBSTITUTE_LINEAR, REASON_READ_BELOW_PREVIOUS)


def segment_grade(spacing_ms: int, estimate_gap_ms: int) -> Grade:
    """The grade of a boundary interpolated between two readings ``spacing_ms`` apart."""
    if spacing_ms <= INTERVAL_MS:
        return ACTUAL
    if spacing_ms <= estimate_gap_ms:
        return ESTIMATED_GAP
    return SUBSTITUTED_GAP


@dataclass(frozen=True, slots=True)
class Interval:
    """Energy of one meter's channel in one 15-minute interval aligned to UTC."""

    meter: str
    start: int
    """Unix seconds, a multiple of 900."""
    end: int
    wh: int
    quality: Quality
    register_start_wh: int
    """Virtual register at ``start`` (raw value plus the epoch offset)."""
    register_end_wh: int
    method: int | None = None
    reason: int | None = None
    start_grade: Grade = ACTUAL
    end_grade: Grade = ACTUAL
    channel: Channel = Channel.IMPORT
    """Which register the interval's energy comes from (:mod:`gateway.channels`)."""


def make_interval(meter: str, start: int, start_wh: int, start_grade: Grade, end_wh: int,
                  end_grade: Grade, channel: Channel = Channel.IMPORT) -> Interval:
    grade = start_grade.worse(end_grade)
    return Interval(meter, start, start + INTERVAL_S, end_wh - start_wh, grade.quality, start_wh, end_wh,
                    grade.method, grade.reason, start_grade, end_grade, channel)


def _round_div(numerator: int, denominator: int) -> int:
    """numerator/denominator rounded half-up, exact for integers (denominator > 0)."""
    return (2 * numerator + denominator) // (2 * denominator)


def interpolate(t0: int, e0: int, t1: int, e1: int, t: int) -> int:
    return e0 + _round_div((e1 - e0) * (t - t0), t1 - t0)


def boundaries_between(t0_ms: int, t1_ms: int) -> range:
    """Boundaries (ms) b with t0 < b <= t1."""
    return range((t0_ms // INTERVAL_MS + 1) * INTERVAL_MS, t1_ms + 1, INTERVAL_MS)


@dataclass(frozen=True, slots=True)
class Run:
    """The intervals closed by moving from reading (t0, v0) to reading (t1, v1).

    Boundaries strictly between the readings are interpolated and graded ``grade``;
    a boundary on t1 is the reading itself (actual; the interval ending there is
    also marked ``forced`` when given: an epoch change). The first interval starts
    at the open interval's start boundary ``anchor`` when there is one; without it
    (the meter's first reading was not on a boundary) the first boundary only opens
    an interval.
    """

    meter: str
    anchor: tuple[int, int, Grade] | None
    """(Unix seconds, virtual Wh, grade) of the boundary the first interval starts at."""
    t0: int
    v0: int
    t1: int
    v1: int
    grade: Grade
    forced: Grade | None = None
    channel: Channel = Channel.IMPORT
    """The channel of both readings, and so of every interval the run closes."""

    @property
    def boundaries(self) -> range:
        return boundaries_between(self.t0, self.t1)

    def __len__(self) -> int:
        n = len(self.boundaries)
        return n if self.anchor is not None else max(0, n - 1)

    def boundary(self, b_ms: int) -> tuple[int, Grade]:
        """Value and grade of boundary ``b_ms`` (one of :attr:`boundaries`)."""
        if b_ms == self.t1:
            return self.v1, ACTUAL
        return interpolate(self.t0, self.v0, self.t1, self.v1, b_ms), self.grade

    def intervals(self, start: int = 0, stop: int | None = None) -> Iterator[Interval]:
        """Intervals ``start`` up to (not including) ``stop``, in time order; each costs O(1)."""
        bounds = self.boundaries  # computed once: this runs for every interval the ledger signs
        skip = 0 if self.anchor is not None else 1
        count = max(0, len(bounds) - skip)
        stop = count if stop is None else min(stop, count)
        boundary, forced, t1 = self.boundary, self.forced, self.t1
        for i in range(start, stop):
            end_ms = bounds[i + skip]
            if i + skip == 0:
                assert self.anchor is not None
                start_s, start_wh, start_grade = self.anchor
            else:
                start_wh, start_grade = boundary(end_ms - INTERVAL_MS)
                start_s = (end_ms - INTERVAL_MS) // 1000
            end_wh, end_grade = boundary(end_ms)
            if forced is not None and end_ms == t1:
                # The interval ending on the reading that proves an epoch change is marked by it,
                # even though the reading itself is an actual value.
                end_grade = end_grade.worse(forced)
            yield make_interval(self.meter, start_s, start_wh, start_grade, end_wh, end_grade, self.channel)

    def last_boundary(self) -> tuple[int, int, Grade] | None:
        """(Unix seconds, Wh, grade) of the last boundary the run fixes: the next open interval's start."""
        bounds = self.boundaries
        if not bounds:
            return None
        value, grade = self.boundary(bounds[-1])
        return bounds[-1] // 1000, value, grade
