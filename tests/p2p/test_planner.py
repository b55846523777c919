"""The delivery planner: whole kWh out, the Wh remainder carried, no Wh created or lost along a meter's chain."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_sync.credit import DOMAIN as CREDIT_DOMAIN
from cloud_sync.keys import Keypair
from gateway.p2p.planner import DEADLINE, QUANTITY, Carry, Decision, ExportInterval, Terms, order, plan
from gateway.p2p.record import DOMAIN, body_of, sign, verify

T0 = 1_767_225_600
STEP = 900


def series(whs: list[int]) -> list[ExportInterval]:
    out, register = [], 50_000
    for k, wh in enumerate(whs):
        register += wh
        out.append(ExportInterval(T0 + k * STEP, T0 + (k + 1) * STEP, wh, register, k + 1, f"{k + 1:064x}"))
    return out


def test_quantity_reached_mid_interval_carries_the_rest() -> None:
    intervals = series([400, 700, 1100, 250])
    d = plan(Terms(7, 2, T0, T0 + 10 * STEP), intervals, Carry(), now=T0)
    assert d is not None
    assert d.reason == QUANTITY
    assert d.kwh == 2
    assert [i.seq for i in d.covered] == [1, 2, 3]  # 2200 Wh: the interval is never split
    assert d.carry_out_wh == 200
    assert d.meter_reading_wh == 50_000 + 2200


def test_deadline_delivers_whole_kwh_and_carries_the_wh() -> None:
    intervals = series([400, 700, 900])
    terms = Terms(1, 5, T0, T0 + 3 * STEP)
    assert plan(terms, intervals, Carry(), now=T0 + 3 * STEP - 1) is None  # not yet: still short, deadline ahead
    d = plan(terms, intervals, Carry(150), now=T0 + 3 * STEP)
    assert d is not None
    assert d.reason == DEADLINE
    assert (d.kwh, d.carry_in_wh, d.carry_out_wh) == (2, 150, 150)  # 150 + 2000 Wh = 2 kWh + 150 Wh
    nxt = plan(Terms(2, 1, T0, T0 + 9 * STEP), series([400, 700, 900, 800, 100]), d.carry, now=T0)
    assert nxt is not None
    assert [i.seq for i in nxt.covered] == [4, 5]
    assert (nxt.kwh, nxt.carry_out_wh) == (1, 50)


def test_nothing_exported_by_the_deadline_is_a_zero_record() -> None:
    d = plan(Terms(3, 4, T0, T0 + STEP), [], Carry(999, T0, 12), now=T0 + STEP)
    assert d is not None
    assert (d.kwh, d.carry_out_wh, d.meter_reading_wh, d.until) == (0, 999, 12, T0)


@st.composite
def chains(draw: st.DrawFn) -> tuple[list[ExportInterval], list[Terms], float]:
    whs = draw(st.lists(st.integers(0, 4000), max_size=60))
    n = draw(st.integers(1, 6))
    terms = []
    for aid in range(1, n + 1):
        start = T0 + draw(st.integers(0, 60)) * STEP + draw(st.sampled_from([0, 1, 450]))
        length = draw(st.integers(1, 40)) * STEP + draw(st.sampled_from([0, 7]))
        terms.append(Terms(aid, draw(st.integers(1, 30)), start, start + length))
    now = T0 + draw(st.integers(0, 120)) * STEP
    return series(whs), terms, float(now)


@settings(max_examples=400, deadline=None)
@given(chains())
def test_no_wh_created_or_lost_along_a_chain(case: tuple[list[ExportInterval], list[Terms], float]) -> None:
    intervals, terms, now = case
    carry = Carry()
    decisions: list[Decision] = []
    for t in order(terms):
        d = plan(t, intervals, carry, now)
        if d is None:
            break  # the meter's later agreements wait for this one
        decisions.append(d)
        # per record: carry_in + covered = whole kWh + carry_out, never negative, never above the agreement
        assert d.carry_in_wh == carry.wh
        assert d.carry_in_wh + d.covered_wh == d.kwh * 1000 + d.carry_out_wh
        assert d.carry_out_wh >= 0
        assert 0 <= d.kwh <= t.kwh
        assert all(t.start <= i.start and i.end <= t.deadline and i.start >= carry.until for i in d.covered)
        if d.reason == QUANTITY:
            assert d.kwh == t.kwh
            assert d.covered
            assert d.carry_in_wh + d.covered_wh - d.covered[-1].wh < t.kwh * 1000
        else:
            assert now >= t.deadline
            assert d.kwh == t.kwh or d.carry_out_wh < 1000  # only a part of a kWh is carried
        carry = d.carry
    covered = [i for d in decisions for i in d.covered]
    assert len({i.seq for i in covered}) == len(covered)  # no interval counted twice
    assert sum(i.wh for i in covered) == sum(d.kwh for d in decisions) * 1000 + carry.wh
    if decisions and decisions[-1].covered:
        assert decisions[-1].meter_reading_wh == decisions[-1].covered[-1].register_end_wh


def test_record_signature_has_its_own_domain() -> None:
    kp = Keypair.random()
    d = plan(Terms(9, 1, T0, T0 + 4 * STEP), series([600, 600]), Carry(), now=T0)
    assert d is not None
    record = sign(body_of(d, Terms(9, 1, T0, T0 + 4 * STEP), gateway="gw", gateway_key=kp.public_key,
                          provider="G" + "A" * 55, provider_meter="m1", decided_at=T0), kp)
    assert verify(record.canonical, record.signature, kp.public_key)
    assert record.body["first_seq"] == 1
    assert record.body["last_seq"] == 2
    assert record.body["carry_out_wh"] == 200
    assert not verify(record.canonical.replace(b'"energy_delivered_kwh":1', b'"energy_delivered_kwh":2'),
                      record.signature, kp.public_key)
    as_credit = base64.b64encode(kp.sign(CREDIT_DOMAIN + record.canonical)).decode()
    assert DOMAIN != CREDIT_DOMAIN
    assert not verify(record.canonical, as_credit, kp.public_key)
