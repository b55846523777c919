"""The read planner: valid blocks, never worse than naive, exactly optimal."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.acquisition.read_plan import (
    ReadPlan,
    WireCost,
    naive_plan,
    plan_profile,
    plan_reads,
    split_block,
)
from gateway.errors import ValueRejected
from gateway.profiles import DataType, Profile, Quantity, builtin_profile, builtin_profiles, decode, encode

SDM630_SIX = ["energy_import", "energy_export", "power_total", "voltage_l1", "current_l1", "frequency"]


def make_q(name: str, address: int, datatype: DataType = DataType.FLOAT32, function: int = 4) -> Quantity:
    return Quantity.model_validate(
        {"name": name, "address": address, "function": function, "datatype": datatype, "scale": 1, "unit": ""}
    )


def check_valid(plan: ReadPlan, quantities: Sequence[Quantity], max_registers: int, even_only: bool) -> None:
    by_name = {q.name: q for q in quantities}
    seen: list[str] = []
    for block in plan.blocks:
        assert 1 <= block.count <= max_registers
        assert block.start >= 0
        assert block.end <= 0x10000
        if even_only:
            assert block.count % 2 == 0
        for name, (offset, width) in zip(block.quantities, block.spans, strict=True):
            q = by_name[name]
            assert q.function == block.function, "a block never mixes function codes"
            assert block.start <= q.address, "a value is never split"
            assert q.end <= block.end, "a value is never split"
            assert (offset, width) == (q.address - block.start, q.register_count)
        seen.extend(block.quantities)
    assert sorted(seen) == sorted(by_name), "every quantity is read exactly once"


def test_wire_cost_matches_field_notes() -> None:
    c = WireCost()  # 9600 8N1
    assert c.char_time() == pytest.approx(10 / 9600)
    assert c.t35() == pytest.approx(3.5 * 10 / 9600)
    assert 1 / c.transaction_time(2) == pytest.approx(40, abs=0.5)  # ~40 txn/s with 2 registers
    assert 76 / c.transaction_time(76) == pytest.approx(424, abs=1)  # ~424 regs/s with 76
    assert WireCost(baud=38400).t35() == 0.00175
    assert WireCost(baud=19200).t35() == pytest.approx(3.5 * 10 / 19200)
    assert WireCost(bits_per_char=11).transaction_time(0) > c.transaction_time(0)
    assert WireCost(turnaround_s=0.015).transaction_time(2) == pytest.approx(c.transaction_time(2) + 0.015)
    with pytest.raises(ValueError, match="invalid wire parameters"):
        WireCost(baud=0)


def test_wire_cost_from_profile_serial_defaults() -> None:
    serial = builtin_profile("schneider-iem3155").serial  # 19200 8E1
    assert WireCost.from_serial(serial) == WireCost(bits_per_char=11, baud=19200)


def test_sixteen_sdm630_six_quantities() -> None:
    profile = builtin_profile("eastron-sdm630")
    qs = [profile.quantities[n] for n in SDM630_SIX]
    cost = WireCost()
    naive = naive_plan(qs, even_only=True)
    best = plan_reads(qs, max_registers=80, even_only=True, cost=cost)
    check_valid(best, qs, 80, True)
    assert 16 * naive.total_time(cost) == pytest.approx(2.40, abs=0.005)
    assert 16 * best.total_time(cost) == pytest.approx(1.533, abs=0.001)
    assert [(b.start, b.count) for b in best.blocks] == [(0x00, 8), (0x34, 2), (0x46, 6)]
    assert best.total_time(cost) == pytest.approx(brute_force_time(qs, 80, True, cost))


def test_turnaround_favours_fewer_requests() -> None:
    profile = builtin_profile("eastron-sdm630")
    qs = [profile.quantities[n] for n in SDM630_SIX]
    cost = WireCost(turnaround_s=0.05)
    plan = plan_reads(qs, max_registers=80, even_only=True, cost=cost)
    # With 50 ms of device think time, reading 0x36..0x45 as padding beats a third request.
    assert [(b.start, b.count) for b in plan.blocks] == [(0x00, 8), (0x34, 24)]
    assert plan.total_time(cost) == pytest.approx(brute_force_time(qs, 80, True, cost))


def test_blocks_never_mix_function_codes() -> None:
    qs = [make_q("a", 0, function=3), make_q("b", 2, function=4), make_q("c", 2, function=3)]
    plan = plan_reads(qs, max_registers=125, cost=WireCost())
    assert [(b.function, b.start, b.count) for b in plan.blocks] == [(3, 0, 4), (4, 2, 2)]


def test_even_only_pads_after_and_at_the_top_before() -> None:
    qs = [make_q("a", 10, DataType.UINT16), make_q("b", 0xFFFF, DataType.UINT16)]
    plan = plan_reads(qs, max_registers=2, even_only=True, cost=WireCost())
    assert [(b.start, b.count, b.spans) for b in plan.blocks] == [(10, 2, ((0, 1),)), (0xFFFE, 2, ((1, 1),))]


def test_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError, match="max_registers"):
        plan_reads([make_q("a", 0)], max_registers=126, cost=WireCost())
    with pytest.raises(ValueError, match="more registers"):
        plan_reads([make_q("a", 0, DataType.UINT64)], max_registers=3, cost=WireCost())
    with pytest.raises(ValueError, match="more registers"):
        plan_reads([make_q("a", 0, DataType.UINT16)], max_registers=1, even_only=True, cost=WireCost())
    with pytest.raises(ValueError, match="duplicate"):
        plan_reads([make_q("a", 0), make_q("a", 4)], max_registers=8, cost=WireCost())


def test_split_block_feeds_decode() -> None:
    qs = [make_q("x", 100), make_q("y", 104, DataType.INT16), make_q("z", 105, DataType.UINT64)]
    values = {"x": 1.5, "y": -7.0, "z": 123456789.0}
    plan = plan_reads(qs, max_registers=125, cost=WireCost())
    (block,) = plan.blocks
    wire = [0xDEAD] * block.count  # gap registers hold junk on purpose
    for q in qs:
        wire[q.address - block.start : q.end - block.start] = encode(q, values[q.name])
    parts = split_block(block, wire)
    assert {q.name: decode(q, parts[q.name]) for q in qs} == values
    with pytest.raises(ValueRejected) as info:
        split_block(block, wire[:-1])
    assert info.value.reason == "length"


@pytest.mark.parametrize("profile", builtin_profiles(), ids=lambda p: p.id)
def test_every_builtin_profile_plans(profile: Profile) -> None:
    cost = WireCost.from_serial(profile.serial)
    plan = plan_profile(profile, cost)
    qs = list(profile.quantities.values())
    check_valid(plan, qs, profile.max_registers_per_read, profile.registers_even_only)
    assert plan.total_time(cost) <= naive_plan(qs, even_only=profile.registers_even_only).total_time(cost)


# --- property tests against an exhaustive search ---------------------------------------


def set_partitions(items: list[Quantity]) -> Iterator[list[list[Quantity]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in set_partitions(rest):
        for i in range(len(partition)):
            yield [*partition[:i], [first, *partition[i]], *partition[i + 1 :]]
        yield [[first], *partition]


def brute_force_time(qs: Sequence[Quantity], max_registers: int, even_only: bool, cost: WireCost) -> float:
    """Cheapest cover over ALL set partitions (not only contiguous runs) per function code."""
    total = 0.0
    for fc in {q.function for q in qs}:
        group = [q for q in qs if q.function == fc]
        best = math.inf
        for partition in set_partitions(group):
            t = 0.0
            for part in partition:
                count = max(q.end for q in part) - min(q.address for q in part)
                count += count % 2 if even_only else 0
                if count > max_registers:
                    break
                t += cost.transaction_time(count)
            else:
                best = min(best, t)
        total += best
    return total


_TYPES = list(DataType)


@st.composite
def quantity_sets(draw: st.DrawFn, max_size: int) -> list[Quantity]:
    n = draw(st.integers(1, max_size))
    next_free = {3: draw(st.integers(0, 50)), 4: draw(st.integers(0, 50))}
    out = []
    for i in range(n):
        fc = draw(st.sampled_from([3, 4]))
        dt = draw(st.sampled_from(_TYPES))
        address = next_free[fc] + draw(st.integers(0, 40))
        out.append(make_q(f"q{i}", address, dt, fc))
        next_free[fc] = address + dt.register_count
    return draw(st.permutations(out))


costs = st.builds(
    WireCost,
    bits_per_char=st.sampled_from([10, 11]),
    baud=st.sampled_from([1200, 2400, 9600, 19200, 38400, 115200]),
    turnaround_s=st.sampled_from([0.0, 0.002, 0.015, 0.06]),
)


@settings(max_examples=300, deadline=None)
@given(qs=quantity_sets(max_size=6), max_registers=st.integers(4, 125), even_only=st.booleans(), cost=costs)
def test_plan_is_the_exact_optimum(
    qs: list[Quantity], max_registers: int, even_only: bool, cost: WireCost
) -> None:
    plan = plan_reads(qs, max_registers=max_registers, even_only=even_only, cost=cost)
    check_valid(plan, qs, max_registers, even_only)
    optimum = brute_force_time(qs, max_registers, even_only, cost)
    assert math.isclose(plan.total_time(cost), optimum, rel_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(qs=quantity_sets(max_size=40), max_registers=st.integers(4, 125), even_only=st.booleans(), cost=costs)
def test_plan_never_worse_than_naive(
    qs: list[Quantity], max_registers: int, even_only: bool, cost: WireCost
) -> None:
    plan = plan_reads(qs, max_registers=max_registers, even_only=even_only, cost=cost)
    check_valid(plan, qs, max_registers, even_only)
    naive = naive_plan(qs, even_only=even_only)
    check_valid(naive, qs, max_registers, even_only)
    assert plan.total_time(cost) <= naive.total_time(cost) + 1e-12
    assert len(plan.blocks) <= len(naive.blocks)


def _default_plan(profile: Profile, *, export: bool, cost: WireCost) -> ReadPlan:
    from gateway.acquisition.energy import polled_quantities
    from gateway.acquisition.modbus import WANTED

    polled = polled_quantities(WANTED, profile)
    if not export:
        polled.pop("energy_export", None)
    return plan_reads(list(polled.values()), max_registers=profile.max_registers_per_read,
                      even_only=profile.registers_even_only, cost=cost)


@pytest.mark.parametrize("profile", builtin_profiles(), ids=lambda p: p.id)
def test_the_export_channel_adds_a_request_only_where_one_block_would_cost_more_wire_time(profile: Profile) -> None:
    """The RS-485 line is the bottleneck: the export register rides in the import register's request where
    that is cheaper than a request of its own, which is every Eastron meter (0x4A right after 0x48)."""
    cost = WireCost(10, 9600)
    without, with_export = (_default_plan(profile, export=e, cost=cost) for e in (False, True))
    if "energy_export" not in profile.quantities:
        assert with_export == without
        return
    export = profile.quantities["energy_export"]
    assert with_export.total_time(cost) <= without.total_time(cost) + cost.transaction_time(export.register_count)
    if len(with_export.blocks) > len(without.blocks):
        imp = profile.quantities["energy_import"]
        lo, hi = min(imp.address, export.address), max(imp.end, export.end)
        shared = hi - lo
        assert (shared > profile.max_registers_per_read
                or cost.transaction_time(shared) > cost.transaction_time(imp.register_count)
                + cost.transaction_time(export.register_count)), "a shared block would have been cheaper"
    if profile.manufacturer == "Eastron":
        assert len(with_export.blocks) == len(without.blocks)
        block = next(b for b in with_export.blocks if "energy_import" in b.quantities)
        assert "energy_export" in block.quantities
