"""Tariffs, bills and projections: pure functions on plain data, money in integer minor units.

Rules (rounding, proration, TOU attribution, projection estimators, confidence) are documented where
they are applied: ``money``, ``tariff``, ``period`` and ``projection``. The daemon supplies data and
"now"; nothing in this package performs I/O or reads a clock.
"""

from __future__ import annotations

from gateway.billing.errors import BillingError
from gateway.billing.feed_in import FeedIn, FeedInWindow
from gateway.billing.money import format_minor, round_half_away
from gateway.billing.period import (
    INTERVAL,
    BillingPeriod,
    billing_period_for,
    expected_intervals,
    local_midnight_utc,
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
