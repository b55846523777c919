"""What line statistics cost per transaction: the O(1) ring against summing the whole last minute.

One command: ``.venv/bin/python benchmarks/line_stats.py``

Issue 11 measured ``ModbusBus._record`` at about a quarter of the daemon's CPU under load: every
transaction summed the last minute's transactions again. :class:`~gateway.acquisition.line_stats.LineStats`
keeps one-second buckets with running totals. Both are fed the same stream (a busy line: 40
transactions a second, one in ten failing, each followed by a rates query as ``_record`` does) and
timed in CPU seconds per 1000 transactions, best of five; the baseline is the naive recomputation,
measured in the same run. The figures of the two are compared on every query, so a fast wrong answer
cannot pass.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import deque

from gateway.acquisition.line_stats import LineStats, Rates

WINDOW_S = 60


class NaiveStats:
    """The baseline: every transaction of the window kept, and summed again on each query."""

    def __init__(self, started: float, window_s: int = WINDOW_S) -> None:
        self._n = window_s
        self._started = started
        self._seen: deque[tuple[float, float, bool]] = deque()

    def add(self, now: float, busy_s: float, *, ok: bool) -> None:
        self._seen.append((now, busy_s, ok))

    def rates(self, now: float) -> Rates:
        second = math.floor(now)
        first = second - self._n + 1
        while self._seen and math.floor(self._seen[0][0]) < first:
            self._seen.popleft()
        span = min(self._n - 1 + (now - second), now - self._started)
        if span <= 0:
            return Rates(0.0, 0.0, 0.0)
        count = len(self._seen)
        errors = sum(1 for _, _, ok in self._seen if not ok)
        busy = sum(b for _, b, _ in self._seen)
        return Rates(count / span, errors / span, min(1.0, busy / span))


def _stream(n: int, rate: float) -> list[tuple[float, float, bool]]:
    return [(1000.0 + i / rate, 0.02, i % 10 != 0) for i in range(n)]


def _cost(make: type[LineStats] | type[NaiveStats], stream: list[tuple[float, float, bool]],
          warm: int) -> tuple[float, list[Rates]]:
    """CPU seconds per 1000 transactions after ``warm`` transactions filled the window (best of five)."""
    best = math.inf
    out: list[Rates] = []
    for _ in range(5):
        stats = make(stream[0][0] - 1.0, WINDOW_S)
        for now, busy, ok in stream[:warm]:
            stats.add(now, busy, ok=ok)
            stats.rates(now)
        out = []
        t0 = time.process_time()
        for now, busy, ok in stream[warm:]:
            stats.add(now, busy, ok=ok)
            out.append(stats.rates(now))
        best = min(best, time.process_time() - t0)
    return best / (len(stream) - warm) * 1000, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40.0, help="transactions per second (default 40)")
    parser.add_argument("--transactions", type=int, default=20_000, help="measured transactions (default 20000)")
    args = parser.parse_args()
    warm = int(args.rate * WINDOW_S * 1.5)
    stream = _stream(warm + args.transactions, args.rate)
    naive_s, naive_rates = _cost(NaiveStats, stream, warm)
    ring_s, ring_rates = _cost(LineStats, stream, warm)
    worst = max(abs(a.utilisation - b.utilisation) + abs(a.transactions_per_s - b.transactions_per_s)
                + abs(a.errors_per_s - b.errors_per_s) for a, b in zip(ring_rates, naive_rates, strict=True))
    print(f"line statistics, {args.rate:g} transactions/s, {WINDOW_S}-s window "
          f"({int(args.rate * WINDOW_S)} transactions in it), add + rates per transaction")
    print(f"naive recomputation (baseline) {naive_s * 1000:8.3f} ms CPU per 1000 transactions")
    print(f"LineStats (O(1) ring)          {ring_s * 1000:8.3f} ms CPU per 1000 transactions"
          f"  -> {ring_s / naive_s:.4f}x the baseline")
    print(f"largest difference in the figures shown: {worst:.2e} "
          f"({'SAME' if worst < 1e-6 else 'DIFFERENT'})")


if __name__ == "__main__":
    main()
