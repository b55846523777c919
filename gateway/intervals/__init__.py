"""Interval maths: pure functions that turn register readings into interval energy."""

from gateway.intervals.engine import (
    INTERVAL_S,
    Disposition,
    Grade,
    Interval,
    MeterState,
    Quality,
    Reading,
    Step,
    feed,
    feed_many,
)

__all__ = [
    "INTERVAL_S",
    "Disposition",
    "Grade",
    "Interval",
    "MeterState",
    "Quality",
    "Reading",
    "Step",
    "feed",
    "feed_many",
]
