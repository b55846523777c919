"""The simulator's solar house: registers by clock time, export only while PV exceeds the load, exact balance."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sim.load import DAY_S, NET_GRID_S, PV_DAYLIGHT_S, PV_PEAK_PER_KWP_W, LoadModel

EPOCH = 1_798_000_123.4
"""Off the grid on purpose: the first, partial grid step is integrated like the others."""
HORIZON_S = 3 * DAY_S

houses = st.builds(lambda name, kwp, noon: LoadModel.for_meter(name, EPOCH, pv_kwp=kwp, pv_noon_s=noon),
                   st.sampled_from(["house-1", "house-2", "solar", "x"]), st.floats(1.0, 12.0),
                   st.floats(9 * 3600, 15 * 3600))
offsets = st.floats(0.0, HORIZON_S, allow_nan=False)


def _max_curvature_w_per_s2(m: LoadModel) -> float:
    """An upper bound of |d²(load − PV)/dt²|: each term's amplitude × its angular frequency squared."""
    bound = m.daily_w * (2 * math.pi / DAY_S) ** 2
    bound += sum(amp * (2 * math.pi / period) ** 2 for amp, period, _ in m.wiggles)
    return bound + m.pv_kwp * PV_PEAK_PER_KWP_W * (math.pi / PV_DAYLIGHT_S) ** 2


@settings(max_examples=200, deadline=None)
@given(houses, offsets)
def test_a_register_grows_on_a_grid_step_only_where_its_side_of_the_net_power_is_positive(m: LoadModel,
                                                                                          x: float) -> None:
    a = math.floor((EPOCH + x) / NET_GRID_S) * NET_GRID_S + NET_GRID_S
    b = a + NET_GRID_S
    surplus = [m.pv_w(t) - m.power_w(t) for t in (a, b)]  # PV minus load at the step's ends
    if m.export_wh(b) > m.export_wh(a):
        assert max(surplus) > 0, "export grew while the load exceeded PV"
    if m.import_wh(b) > m.import_wh(a):
        assert min(surplus) < 0, "import grew while PV exceeded the load"
    if min(surplus) > 0:
        assert m.import_wh(b) == m.import_wh(a)
    if max(surplus) < 0:
        assert m.export_wh(b) == m.export_wh(a)


@settings(max_examples=200, deadline=None)
@given(houses, offsets, offsets)
def test_import_minus_export_is_the_integral_of_load_minus_pv(m: LoadModel, x0: float, x1: float) -> None:
    t0, t1 = sorted((EPOCH + x0, EPOCH + x1))
    imported = m.import_wh(t1) - m.import_wh(t0)
    exported = m.export_wh(t1) - m.export_wh(t0)
    assert imported >= 0
    assert exported >= 0
    net_wh = (m.load_joules(t0, t1) - m.pv_joules(t0, t1)) / 3600
    # Each register is floored to whole Wh (±1 each); the net power is the line between grid points, which
    # differs from the curve by at most h²/8 × its curvature.
    tolerance = 2 + NET_GRID_S**2 / 8 * _max_curvature_w_per_s2(m) * (t1 - t0) / 3600
    assert abs(imported - exported - net_wh) <= tolerance, (imported, exported, net_wh, tolerance)


@settings(max_examples=50, deadline=None)
@given(houses, st.lists(offsets, min_size=2, max_size=12))
def test_registers_depend_on_the_clock_time_only_and_never_go_down(m: LoadModel, xs: list[float]) -> None:
    times = [EPOCH + x for x in xs]
    fresh = LoadModel.for_meter("house-1", EPOCH, pv_kwp=m.pv_kwp, pv_noon_s=m.pv_noon_s)
    used = LoadModel.for_meter("house-1", EPOCH, pv_kwp=m.pv_kwp, pv_noon_s=m.pv_noon_s)
    forward = [(fresh.import_wh(t), fresh.export_wh(t)) for t in sorted(times)]
    backward = [(used.import_wh(t), used.export_wh(t)) for t in sorted(times, reverse=True)][::-1]
    assert forward == backward, "asked in another order, the same registers"
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(forward))


def test_a_day_of_a_5_kwp_house_exports_around_noon_and_imports_at_night() -> None:
    day0 = math.floor(EPOCH / DAY_S) * DAY_S + DAY_S
    m = LoadModel.for_meter("house-1", EPOCH, pv_kwp=5.0)
    hours = {h: (m.import_wh(day0 + h * 3600), m.export_wh(day0 + h * 3600)) for h in range(25)}
    night = [*range(6), *range(18, 24)]
    for h in night:
        assert hours[h + 1][1] == hours[h][1], f"no feed-in between {h}:00 and {h + 1}:00 (no sun)"
        assert hours[h + 1][0] > hours[h][0]
    for h in range(10, 14):  # 4 kW of PV against under 2 kW of load
        assert hours[h + 1][0] == hours[h][0], f"nothing drawn between {h}:00 and {h + 1}:00"
        assert hours[h + 1][1] - hours[h][1] > 2_000
    assert m.net_w(day0 + 12 * 3600) < 0 < m.net_w(day0)
    assert m.power_w(day0 + 12 * 3600) > 0, "the load is still consumption"


def test_without_pv_nothing_changed() -> None:
    # Registers of the closed-form model as they were before the solar house existed (values from then).
    for meter, t, wh in (("a", 1_798_003_600.5, 169_549), ("a", 1_798_259_217.0, 441_990),
                         ("flat-1", 1_798_003_600.5, 1_993_952), ("flat-1", 1_798_259_217.0, 2_140_894)):
        m = LoadModel.for_meter(meter, 1_798_000_000.0)
        assert m.register_wh(t) == m.import_wh(t) == wh
        assert m.export_wh(t) == m.export_wh(1_798_000_000.0) == 0
        assert m.net_w(t) == m.power_w(t)
        assert m.pv_w(t) == 0.0


def test_the_sim_command_puts_panels_on_a_house() -> None:
    import pytest

    from gateway.errors import ConfigError
    from gateway.sim.cli import build_meters, parse_solar

    meters = build_meters(["1=eastron-sdm630", "2=orno-we514"], EPOCH, parse_solar(["1=5"]))
    assert [(m.unit_id, m.model.pv_kwp) for m in meters] == [(1, 5.0), (2, 0.0)]
    noon = math.floor(EPOCH / DAY_S) * DAY_S + DAY_S + 12 * 3600
    assert meters[0].values(noon)["power_total"] < 0, "feeding in at noon"
    assert meters[0].values(noon + 600)["energy_export"] > meters[0].values(noon)["energy_export"]
    with pytest.raises(ConfigError, match="has no export register"):
        build_meters(["2=orno-we514"], EPOCH, parse_solar(["2=5"]))
    with pytest.raises(ConfigError, match="which no meter has"):
        build_meters(["1=eastron-sdm630"], EPOCH, parse_solar(["3=5"]))
    with pytest.raises(ConfigError, match="ID=KWP"):
        parse_solar(["1=lots"])
