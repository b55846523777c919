"""Capped exponential backoff with jitter (pure apart from the random source)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays of base·2^n, capped, each drawn from [cap/2, cap] ("equal jitter").

    Jitter keeps a fleet of gateways that lost the network together from
    retrying in lockstep when it comes back.
    """

    base_s: float = 1.0
    max_s: float = 300.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self, retry_after: float | None = None) -> float:
        ceiling = min(self.max_s, self.base_s * 2 ** min(self.attempts, 30))
        self.attempts += 1
        delay = self.rng.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            # The server said when; never sooner, but still within our cap.
            delay = max(delay, min(retry_after, self.max_s))
        return delay

    def give_up_to_max(self) -> float:
        """For errors a retry soon cannot fix (bad credentials): wait the longest."""
        self.attempts = 30
        return self.max_s

    def reset(self) -> None:
        self.attempts = 0
