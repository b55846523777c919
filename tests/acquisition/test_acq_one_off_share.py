"""One-off reads share a line with the regular polls: they get at most ``one_off_share`` of it.

Over a real Modbus TCP simulator: three technicians read a slow device (every answer takes
0.6 s) again and again while three meters are polled every second. Before the share existed,
one-off transactions were interleaved one per poll, so each slot carried three slow answers and
the polls lost about half their slots.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from gateway.acquisition.modbus import ModbusBus
from gateway.acquisition.one_off import MAX_PENDING_READS, MAX_PENDING_REQUESTS, BusBusy, OneOffQueue, ShareBudget
from gateway.channels import Channel
from gateway.clock import ManualClock, SystemClock
from gateway.config import BusConfig
from gateway.intervals import Reading
from gateway.profiles import builtin_profile
from gateway.sim.load import LoadModel
from gateway.sim.modbus_sim import MeterSimulator, SimulatedMeter
from gateway.status import GatewayStatus
from gateway.web.server import free_port
from tests.bounded import within

SDM630 = builtin_profile("eastron-sdm630")
PERIOD_S = 1.0
SLOW_ANSWER_S = 0.6
WINDOW_S = 8.0
SHARE = 0.2
SLOW_UNIT = 9
STEP_S = 20.0
"""Bounds each set-up and tear-down step: each takes well under a second; a hang fails, naming the step."""


async def test_three_slow_one_off_reads_keep_the_polls_on_their_period() -> None:
    clock = SystemClock()
    epoch = math.floor(clock.now())
    polled = [SimulatedMeter(f"m{u}", u, SDM630, LoadModel.for_meter(f"m{u}", epoch)) for u in (1, 2, 3)]
    slow = SimulatedMeter("slow", SLOW_UNIT, SDM630, LoadModel.for_meter("slow", epoch),
                          answer_delay_s=SLOW_ANSWER_S)
    port = free_port()
    sim = MeterSimulator([*polled, slow], clock, port=port)
    await sim.start()
    readings: list[Reading] = []

    async def submit(r: Reading) -> None:
        if r.channel is Channel.IMPORT:  # one reading per poll; channels: test_acq_channels.py
            readings.append(r)

    cfg = BusConfig.model_validate({
        "name": "ep", "kind": "tcp", "host": "127.0.0.1", "port": port, "timeout_s": 1.0, "retries": 0,
        "one_off_share": SHARE,
        "meters": [{"id": m.meter_id, "unit_id": m.unit_id, "profile": "eastron-sdm630", "poll_s": PERIOD_S}
                   for m in polled],
    })
    bus = ModbusBus(cfg, {m.meter_id: SDM630 for m in polled}, clock, submit, GatewayStatus("gw", "k", clock.now()))
    one_off_reads = 0

    async def technician() -> None:
        nonlocal one_off_reads
        while True:
            await bus.read_values(SLOW_UNIT, SDM630, ["energy_import", "voltage_l1", "frequency"])
            one_off_reads += 1

    async def first_polls() -> None:
        while len(readings) < 3:
            await asyncio.sleep(0.01)

    task = asyncio.create_task(bus.run())
    try:
        await within(STEP_S, "the first three polls", first_polls())
        before = len(readings)
        slow_reads_before = slow.reads
        t0 = clock.monotonic()
        technicians = [asyncio.create_task(technician()) for _ in range(3)]
        await asyncio.sleep(WINDOW_S)
        window = clock.monotonic() - t0
        polls = len(readings) - before
        slow_answers = slow.reads - slow_reads_before
        for t in technicians:
            t.cancel()
        await within(STEP_S, "the technicians' reads, cancelled", asyncio.gather(*technicians, return_exceptions=True))
    finally:
        task.cancel()
        await within(STEP_S, "the bus, cancelled", asyncio.gather(task, return_exceptions=True))
        await within(STEP_S, "the simulator's stop", sim.stop())
    expected = len(polled) * window / PERIOD_S
    cut = 1 - polls / expected
    print(f"polls {polls} of {expected:.0f} expected (cut {cut:.0%}); one-off transactions {slow_answers}, "
          f"one-off line time {slow_answers * SLOW_ANSWER_S:.1f} s of {window:.1f} s")
    assert cut <= SHARE, f"the polls lost {cut:.0%} of their slots to one-off reads (allowed {SHARE:.0%})"
    assert slow_answers >= 2, "the one-off reads still made progress"
    # The share is kept over the window, plus one burst of SHARE x ONE_OFF_WINDOW_S after a quiet spell.
    assert slow_answers * SLOW_ANSWER_S <= SHARE * window + 2.0 + SLOW_ANSWER_S


def test_share_budget_lets_one_off_reads_ahead_only_within_the_share() -> None:
    budget = ShareBudget(0.2, window_s=10.0)
    assert budget.wait_s(0.0) <= 0, "a first request need not wait"
    budget.charge(0.6, 0.6)
    assert budget.wait_s(0.6) == pytest.approx(2.4), "0.6 s ahead of the polls, then 2.4 s of polls only: 20 %"
    assert budget.wait_s(3.0) <= 0
    assert budget.wait_s(1000.0) == pytest.approx(-10.0), "a quiet spell saves at most share x window"
    used = 0.0
    t = 1000.0
    while t < 1100.0:  # a greedy client, 100 s long
        wait = budget.wait_s(t)
        t += max(wait, 0.0)
        budget.charge(0.6, t + 0.6)
        t += 0.6
        used += 0.6
    assert used <= 0.2 * (t - 1000.0) + 2.0 + 0.6 + 1e-9, "the share, the saved burst and one overdraw"
    assert used >= 0.2 * (t - 1000.0), "and no less: the budget is not a stricter limit than it says"


async def test_the_queue_is_bounded_and_forgets_callers_that_gave_up() -> None:
    cfg = BusConfig.model_validate({"name": "ep", "host": "127.0.0.1", "port": 1})
    queue = OneOffQueue(cfg, ManualClock())  # no scheduler: nothing is ever served
    waiting = [asyncio.create_task(queue.submit(1, 4, 0, 2, 0.0)) for _ in range(MAX_PENDING_REQUESTS)]
    await asyncio.sleep(0)
    assert len(queue) == MAX_PENDING_REQUESTS
    with pytest.raises(BusBusy) as full:
        await queue.submit(1, 4, 0, 2, 0.0)
    assert full.value.retry_after_s >= 1
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert len(queue) == 0, "callers that gave up left the queue"

    async def read() -> None:
        async with queue.read():
            await asyncio.sleep(3600)

    reads = [asyncio.create_task(read()) for _ in range(MAX_PENDING_READS)]
    await asyncio.sleep(0)
    with pytest.raises(BusBusy, match="one-off reads in progress; try again in"):
        async with queue.read():
            pass
    reads[0].cancel()
    await asyncio.gather(reads[0], return_exceptions=True)
    async with queue.read():
        pass
    for task in reads[1:]:
        task.cancel()
    await asyncio.gather(*reads, return_exceptions=True)
