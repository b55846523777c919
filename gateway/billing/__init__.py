"""Tariffs, bills and projections: pure functions on plain data, money in integer minor units.

Rules (rounding, proration, TOU attribution, projection estimators, confidence) are documented where
they are applied: ``money``, ``tariff``, ``period`` and ``projection``. The daemon supplies data and
"now"; nothing in this package performs I/O or reads a clock.

The tariff and projection names are loaded on first use (PEP 562): the tariff models are pydantic
ones, and a box whose configuration has no tariff (its status page, its charts) should not import
pydantic for the names it never uses. ``errors``, ``money`` and ``period`` are plain and loaded here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gateway.billing.errors import BillingError
from gateway.billing.money import format_minor, round_half_away
from gateway.billing.period import (
    INTERVAL,
    BillingPeriod,
    billing_period_for,
    expected_intervals,
    local_midnight_utc,
)

if TYPE_CHECKING:
    from gateway.billing.feed_in import (
        FeedIn,
        FeedInWindow,
    )
    from gateway.billing.projection import (
        HALF_LIFE_DAYS,
        LOOKBACK_DAYS,
        BudgetAlert,
        DailyUsage,
        PeriodToDate,
        Projection,
        ProjectionMethod,
        aggregate_daily,
        check_budget,
        period_to_date,
        project,
    )
    from gateway.billing.tariff import (
        Bill,
        FixedCharge,
        FixedSurcharge,
        KwhSurcharge,
        LineItem,
        LineKind,
        Tariff,
        Tax,
        Tier,
        TieredEnergy,
        TouEnergy,
        TouWindow,
        Usage,
        compute_bill,
        proration_factor,
        split_tiers,
        tier_thresholds_wh,
    )

_LAZY = {
    "FeedIn": "gateway.billing.feed_in",
    "FeedInWindow": "gateway.billing.feed_in",
    "HALF_LIFE_DAYS": "gateway.billing.projection",
    "LOOKBACK_DAYS": "gateway.billing.projection",
    "BudgetAlert": "gateway.billing.projection",
    "DailyUsage": "gateway.billing.projection",
    "PeriodToDate": "gateway.billing.projection",
    "Projection": "gateway.billing.projection",
    "ProjectionMethod": "gateway.billing.projection",
    "aggregate_daily": "gateway.billing.projection",
    "check_budget": "gateway.billing.projection",
    "period_to_date": "gateway.billing.projection",
    "project": "gateway.billing.projection",
    "Bill": "gateway.billing.tariff",
    "FixedCharge": "gateway.billing.tariff",
    "FixedSurcharge": "gateway.billing.tariff",
    "KwhSurcharge": "gateway.billing.tariff",
    "LineItem": "gateway.billing.tariff",
    "LineKind": "gateway.billing.tariff",
    "Tariff": "gateway.billing.tariff",
    "Tax": "gateway.billing.tariff",
    "Tier": "gateway.billing.tariff",
    "TieredEnergy": "gateway.billing.tariff",
    "TouEnergy": "gateway.billing.tariff",
    "TouWindow": "gateway.billing.tariff",
    "Usage": "gateway.billing.tariff",
    "compute_bill": "gateway.billing.tariff",
    "proration_factor": "gateway.billing.tariff",
    "split_tiers": "gateway.billing.tariff",
    "tier_thresholds_wh": "gateway.billing.tariff",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "HALF_LIFE_DAYS",
    "INTERVAL",
    "LOOKBACK_DAYS",
    "Bill",
    "BillingError",
    "BillingPeriod",
    "BudgetAlert",
    "DailyUsage",
    "FeedIn",
    "FeedInWindow",
    "FixedCharge",
    "FixedSurcharge",
    "KwhSurcharge",
    "LineItem",
    "LineKind",
    "PeriodToDate",
    "Projection",
    "ProjectionMethod",
    "Tariff",
    "Tax",
    "Tier",
    "TieredEnergy",
    "TouEnergy",
    "TouWindow",
    "Usage",
    "aggregate_daily",
    "billing_period_for",
    "check_budget",
    "compute_bill",
    "expected_intervals",
    "format_minor",
    "local_midnight_utc",
    "period_to_date",
    "project",
    "proration_factor",
    "round_half_away",
    "split_tiers",
    "tier_thresholds_wh",
]
