"""check-config's line budget: can each serial line keep its meters' poll periods?

An RS-485 line carries one transaction at a time, and every transaction takes the time its bytes and
silences take on the wire. Summing the wire time of each meter's read plan (the requests the bus will
really send, with the line's gaps and the meters' turnaround) over the configured periods tells the
installer before the first poll whether the periods fit. A line that does not fit still runs: the
bus then polls its meters round robin, each as often as the line allows; check-config says how often
that is and which ``poll_s`` would fit. It warns; it does not refuse the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config.model import BusConfig, GatewayConfig

SUB_SECOND_PERIODS = (0.1, 0.2, 0.25, 0.5)
"""Periods under a second worth suggesting; above it, whole seconds that divide 900."""


@dataclass(frozen=True)
class LineBudget:
    bus: str
    meters: int
    utilisation: float
    """Wire time the configured polls need per second of polling (above 1: they cannot be kept)."""
    period_s: float
    """The line's shortest configured poll period."""
    wire_s: float
    """Wire time of one poll of every meter on that period."""
    feasible_period_s: float | None
    """The shortest period those meters can have while the others keep theirs (None: the others alone
    fill the line)."""

    @property
    def fits(self) -> bool:
        return self.utilisation <= 1.0


def fitting_period(at_least_s: float) -> float | None:
    """The shortest poll period that a poll period may be (it divides 900) and that is at least this long."""
    for candidate in SUB_SECOND_PERIODS:
        if candidate >= at_least_s:
            return candidate
    for whole in range(1, 901):
        if 900 % whole == 0 and whole >= at_least_s:
            return float(whole)
    return None


def line_budget(bus: BusConfig, base_dir: Path | None = None) -> LineBudget | None:
    """The budget of one serial line (None for Modbus TCP and lines without meters); profiles must resolve."""
    # Imported here: only check-config needs the planner and the profile library.
    from gateway.acquisition.modbus import WANTED, polled_quantities
    from gateway.acquisition.read_plan import WireCost, plan_reads
    from gateway.acquisition.schedule import job_specs, line_demand, poll_wire_s
    from gateway.profiles import resolve_profile

    if bus.kind == "tcp" or not bus.meters:
        return None
    loads: list[tuple[float, float]] = []
    for meter in bus.meters:
        profile = resolve_profile(meter.profile, base_dir)
        quantities = polled_quantities(meter.quantities or WANTED, profile)
        cost = WireCost.for_line(bus.framing, bus.baud, meter.turnaround_s)
        for names, period, _ in job_specs(meter, tuple(quantities)):
            plan = plan_reads([quantities[n] for n in names], max_registers=profile.max_registers_per_read,
                              even_only=profile.registers_even_only, cost=cost)
            loads.append((poll_wire_s(plan, cost, bus.inter_frame_gap_s or 0.0, bus.device_switch_delay_s), period))
    demand = line_demand(loads)
    if demand is None:
        return None
    fastest = demand.shortest_period_s
    wire_s = sum(c for c, p in loads if p == fastest)
    return LineBudget(bus.name, len(bus.meters), demand.utilisation, fastest, wire_s, demand.feasible_period_s)


def line_report(cfg: GatewayConfig, base_dir: Path | None = None) -> list[str]:
    """One line per serial bus for check-config: what its polls need of the wire, with a warning and the
    shortest feasible period where the configured ones cannot be kept."""
    out = []
    for bus in cfg.buses:
        budget = line_budget(bus, base_dir)
        if budget is None:
            continue
        need = (f"bus {budget.bus}: polls need {budget.utilisation:.0%} of the line ({budget.wire_s:.3f} s of "
                f"wire time per {budget.period_s:g} s poll at {bus.baud} baud)")
        if budget.fits:
            out.append(need)
            continue
        feasible = budget.feasible_period_s
        if feasible is None:
            out.append(f"warning: {need}; the meters on longer periods alone fill the line: lengthen their "
                       "poll_s, read fewer quantities, or split the meters over more lines")
            continue
        suggestion = fitting_period(feasible)
        use = f": use poll_s = {suggestion:g} (it divides 900)" if suggestion is not None else ""
        out.append(f"warning: {need}; the periods cannot be kept, so the meters on poll_s = {budget.period_s:g} "
                   f"are polled round robin, each about every {feasible:.3f} s or more. The minimum feasible "
                   f"period is {feasible:.3f} s{use}, or read fewer quantities, or split the meters over more "
                   "lines")
    return out
