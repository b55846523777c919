"""Feed-in: what a tariff pays for energy a meter exports, as credit lines on the bill (pure).

A tariff may carry an optional ``feed_in`` table::

    [tariffs.solar.feed_in]
    label = "Solar feed-in"        # optional; default "Feed-in credit"
    rate = "0.05"                  # per exported kWh, flat

or, for a time-of-use tariff, one rate per TOU window of the tariff's own energy windows::

    [tariffs.solar-tou.feed_in]
    windows = [{ window = "On-peak", rate = "0.15" }, { window = "Off-peak", rate = "0.04" }]

Rules (one place, so the bill, the projection and a re-verified bill agree):

* Exported Wh are attributed to windows exactly like imported Wh: by each interval's *start* in the
  site's local time (``TouEnergy.label_at``). By-window rates must name every window of the tariff,
  so no exported hour is unpriced by accident; a window that should pay nothing says ``rate = "0"``.
* Each feed-in line is exact kWh × rate, rounded once half away from zero to the minor unit, with the
  sign of a credit: ``amount_minor = -round_half_away(kWh × rate × 10**minor_units)``. The quantity
  and the rate stay positive on the line (what the customer exported, what the retailer pays).
* Feed-in lines come *after* taxes and are not part of the base of any charge. Decision, stated here
  because tariffs differ: fixed charges, per-kWh surcharges (they are levied on imported kWh) and
  percentage taxes apply to the *charges* only, never to the credit. Why: a feed-in payment is a
  purchase of the customer's energy by the retailer, not a discount on the supply; residential
  feed-in credits are commonly paid without tax (e.g. Australian small-generator feed-in tariffs:
  the householder is not GST-registered), and netting them before tax would change the tax the
  utility owes. A tariff that needs a different treatment must express it as its own lines.
* The bill's net amount is charges + credits and may be negative (the retailer owes the customer).
* Only energy that the ledger holds on the *export* channel is ever credited; import and export never
  mix (``gateway.channels``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Self

from gateway.schema import BeforeValidator, Field, Model, StringConstraints, model_validator

DEFAULT_LABEL = "Feed-in credit"


def _no_float(value: object) -> object:
    if isinstance(value, bool | float):
        raise ValueError(
            'give feed-in rates as decimal strings (e.g. rate = "0.05"), not numbers with a fractional part, '
            "so they keep exactly the value the tariff publishes"
        )
    return value


_Rate = Annotated[Decimal, BeforeValidator(_no_float), Field(ge=0)]
_Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]


class _Model(Model):
    """Frozen, unknown keys refused (a :class:`gateway.schema.Model`, like the tariff that holds it)."""


class FeedInWindow(_Model):
    """The feed-in rate for exported energy in one of the tariff's TOU windows (named by its label)."""

    window: _Label
    rate: _Rate


class FeedIn(_Model):
    """A feed-in rate: one flat ``rate`` per exported kWh, or one per TOU window in ``windows``."""

    label: _Label = DEFAULT_LABEL
    rate: _Rate | None = None
    windows: tuple[FeedInWindow, ...] = ()

    @model_validator(mode="after")
    def _one_kind_of_rate(self) -> Self:
        if (self.rate is None) == (not self.windows):
            raise ValueError(
                'give either rate = "0.05" (a flat feed-in rate per kWh) or windows = '
                '[{ window = "On-peak", rate = "0.15" }, ...] (one rate per TOU window), not '
                + ("both" if self.rate is not None else "neither")
            )
        seen: set[str] = set()
        for entry in self.windows:
            if entry.window in seen:
                raise ValueError(f"feed-in window {entry.window!r} is given twice: give each window one rate")
            seen.add(entry.window)
        return self

    @property
    def by_window(self) -> bool:
        return bool(self.windows)

    def check_windows(self, labels: tuple[str, ...] | None) -> None:
        """Refuse by-window rates that do not match the tariff's TOU windows (``None``: not a TOU tariff)."""
        if not self.windows:
            return
        if labels is None:
            raise ValueError(
                "feed-in rates by window need a time-of-use tariff (energy kind = \"tou\"); "
                'for a tiered tariff give one flat rate = "0.05"'
            )
        named = [entry.window for entry in self.windows]
        unknown = [w for w in named if w not in labels]
        missing = [w for w in labels if w not in named]
        problems = []
        if unknown:
            problems.append(f"windows {unknown} are not energy windows of this tariff")
        if missing:
            problems.append(f"windows {missing} have no feed-in rate (give rate = \"0\" to pay nothing there)")
        if problems:
            raise ValueError(f"feed-in windows must be exactly the tariff's TOU windows {list(labels)}: "
                             + "; ".join(problems))

    def lines(self, by_label: dict[str, int], labels: tuple[str, ...] | None) -> list[tuple[str, int, Decimal]]:
        """(line label, exported Wh, rate) in bill order.

        ``by_label`` is exported Wh per TOU window label (or under ``""`` for everything when the rate
        is flat). One flat line always (even at 0 kWh, so the bill states the rate); by window, the
        lines with energy, or the first at zero when nothing was exported.
        """
        if self.rate is not None:
            return [(self.label, sum(by_label.values()), self.rate)]
        assert labels is not None  # check_windows ran when the tariff was validated
        rates = {entry.window: entry.rate for entry in self.windows}
        found = [(f"{self.label} ({label})", by_label.get(label, 0), rates[label]) for label in labels]
        return [line for line in found if line[1] > 0] or found[:1]
