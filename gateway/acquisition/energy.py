"""A meter's energy channels as acquisition sees them: which it has, and each one's series of readings (pure).

A poll that reads energy gives one :class:`~gateway.intervals.Reading` per channel the meter has
(:mod:`gateway.channels`): ``import`` from the profile's ``energy_import`` register and, when the profile
maps one, ``export`` from ``energy_export``. The two share the poll's timestamp and nothing else: each has
its own register modulus (from its own data type), its own last accepted value and its own run of
readings off that series (a reset or a replacement meter shows on each register separately), so a
misread, a NaN or an implausible jump on one channel rejects that channel's value only and the other
channel's reading still goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.acquisition.plausibility import implausible
from gateway.acquisition.plausibility import modulus_wh as _modulus_wh
from gateway.channels import CHANNELS, REGISTER_OF, Channel
from gateway.intervals import Reading
from gateway.intervals.engine import CONFIRM_READINGS
from gateway.profiles import Profile, Quantity

ENERGY_REGISTERS: tuple[str, ...] = tuple(REGISTER_OF[c] for c in CHANNELS)
"""The cumulative registers that become channels, in channel order (import first)."""


def profile_channels(quantities: Mapping[str, Quantity] | Profile) -> tuple[Channel, ...]:
    """The channels a meter with this profile (or these polled quantities) has: those whose register is mapped.

    A profile without ``energy_export`` has no export channel; one without ``energy_import`` has no
    import channel either (it reads nothing billable, and the bus says so)."""
    mapped = quantities.quantities if isinstance(quantities, Profile) else quantities
    return tuple(c for c in CHANNELS if REGISTER_OF[c] in mapped)


def describe_channels(channels: tuple[Channel, ...] | list[Channel]) -> str:
    """ "import + export", "import only", or "none" (for check-config and the scan)."""
    if not channels:
        return "none"
    if len(channels) == 1:
        return f"{channels[0].value} only"
    return " + ".join(c.value for c in channels)


@dataclass(frozen=True, slots=True)
class Offered:
    """What became of one channel's value."""

    submit: tuple[Reading, ...]
    """Readings to hand on, in order: the value itself, or a confirmed new series."""
    problem: tuple[str, str] | None = None
    """(reason, detail) when the value itself was rejected as implausible."""
    new_series: bool = False
    """The value confirmed a new series (a reset or a replaced meter): ``submit`` holds all of it."""

    @property
    def accepted(self) -> bool:
        return bool(self.submit)


@dataclass
class ChannelSeries:
    """One channel of one meter: its register and what acquisition remembers of it between polls."""

    meter: str
    channel: Channel
    quantity: Quantity
    max_power_w: float
    last: Reading | None = None
    new_series: list[Reading] = field(default_factory=list)
    """Consecutive readings off the series of ``last`` (rejected so far): a reset or a new meter if they persist."""

    @property
    def register(self) -> str:
        return REGISTER_OF[self.channel]

    def reading(self, t_ms: int, wh: int, source: str) -> Reading:
        return Reading(self.meter, t_ms, wh, source, register_modulus_wh=_modulus_wh(self.quantity),
                       max_power_w=self.max_power_w, channel=self.channel)

    def offer(self, reading: Reading) -> Offered:
        """Judge a new value against this channel's series.

        On the series: accepted. Off it (backwards, or faster than the meter can measure): rejected;
        once :data:`CONFIRM_READINGS` such values in a row form a consistent series of their own, they
        are handed on, in order, and the interval engine starts a new register epoch from them.
        """
        problem = implausible(self.last, reading, self.max_power_w)
        if problem is None:
            self.new_series.clear()
            self.last = reading
            return Offered((reading,))
        series = self.new_series
        if series and implausible(series[-1], reading, self.max_power_w):
            series.clear()
        series.append(reading)
        if len(series) < CONFIRM_READINGS:
            return Offered((), problem)
        confirmed = tuple(series)
        self.last = series[-1]
        series.clear()
        return Offered(confirmed, problem, new_series=True)


def channel_series(meter: str, quantities: Mapping[str, Quantity], max_power_w: float) -> dict[Channel, ChannelSeries]:
    """A series per channel the polled quantities map, import first."""
    return {c: ChannelSeries(meter, c, quantities[REGISTER_OF[c]], max_power_w) for c in profile_channels(quantities)}


def judge(series: Iterable[ChannelSeries], values: Mapping[str, float], t_ms: int,
          source: str) -> list[tuple[ChannelSeries, Offered, int | None]]:
    """Offer each channel's value of one poll to its series: (series, outcome, register before) for every
    channel that has a value (one that failed decoding has none, and the others are judged all the same)."""
    out = []
    for s in series:
        energy = values.get(s.register)
        if energy is None:
            continue
        old = s.last.register_wh if s.last else None
        out.append((s, s.offer(s.reading(t_ms, round(energy), source)), old))
    return out


def polled_quantities(names: Iterable[str], profile: Profile) -> dict[str, Quantity]:
    """The profile quantities a meter polls: those asked for that its profile maps, and always its energy
    registers: import, and export where the profile maps it (each a channel of its own). check-config
    refuses names the profile lacks; a profile without the import register reads nothing billable."""
    wanted = dict.fromkeys((*ENERGY_REGISTERS, *names))
    return {name: profile.quantities[name] for name in wanted if name in profile.quantities}
