"""The bounded queue between acquisition and the broker: appending never waits, the oldest goes first."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from gateway.status import LiveValue


@dataclass(frozen=True, slots=True)
class Item:
    meter: str
    quantity: str
    value: LiveValue


class LiveQueue:
    """Live values waiting to be published, at most ``size``.

    :meth:`offer` is what a poll calls (through ``MeterStatus.value_sink``): O(1), no await, so a
    broker that is slow or away can never hold up a bus. When the queue is full the oldest value is
    dropped and counted: a live value is only worth its newest reading, and the newest of each
    quantity is published again after every reconnect.
    """

    def __init__(self, size: int) -> None:
        self._items: deque[Item] = deque(maxlen=size)
        self.dropped = 0
        self.ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, meter: str, quantity: str, value: LiveValue) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(Item(meter, quantity, value))
        self.ready.set()

    def take(self, limit: int) -> list[Item]:
        out: list[Item] = []
        while self._items and len(out) < limit:
            out.append(self._items.popleft())
        if not self._items:
            self.ready.clear()
        return out

    def clear(self) -> None:
        self._items.clear()
        self.ready.clear()
