"""A lone RTU line sleeps its whole frame gap in place: bytes in those milliseconds still restart the silence.

Real pseudo-terminal, opened with pyserial as the daemon opens a line. The hold is where the event loop
cannot see the line, so the test writes noise into the other end during it and checks that the request
would only go out a whole gap after that noise, never into it.
"""

from __future__ import annotations

import os
import select
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.acquisition import transport as transport_module
from gateway.acquisition.transport import RtuTransport
from gateway.config import BusConfig

NOISE = b"\xff\x00"


@pytest.fixture
def pty_line(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = tmp_path / "ttyHELD"
    path.symlink_to(os.ttyname(slave))
    try:
        yield master, slave, path  # the slave fd: to see (without reading) when the noise is on the tty
    finally:
        os.close(master)
        os.close(slave)


def bus(path: Path) -> BusConfig:
    return BusConfig.model_validate({
        "name": "held", "kind": "rtu", "device": str(path), "baud": 9600, "timeout_s": 0.05,
        "meters": [{"id": "m1", "unit_id": 1, "profile": "eastron-sdm630", "poll_s": 1}],
    })


async def test_noise_during_a_gap_held_in_place_restarts_the_silence(
        pty_line: tuple[int, int, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave, path = pty_line
    monkeypatch.setattr(RtuTransport, "_open_links", set())  # this line alone, whatever other tests left open
    rtu = RtuTransport(bus(path))
    holds: list[float] = []
    noise_at: list[float] = []

    def hold(seconds: float) -> None:
        holds.append(seconds)
        if len(holds) == 1:  # the loop is held: noise arrives now, unseen by it
            os.write(master, NOISE)
            select.select([slave], [], [], 1.0)
            noise_at.append(time.monotonic())
        time.sleep(seconds)

    monkeypatch.setattr(transport_module, "_hold", hold)
    link = await rtu._open()
    try:
        await rtu._await_silence(link, unit=1)
        done = time.monotonic()
    finally:
        rtu.close()
    assert link.broken is None, link.broken
    assert len(holds) == 2, "the silence was not restarted by bytes that came during the held gap"
    assert rtu.noise_bytes == len(NOISE)
    assert done - noise_at[0] >= rtu.gap_s
