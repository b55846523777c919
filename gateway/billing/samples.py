"""Reference tariffs: the seed bill's residential tariff and a TOU example.

Kept in the package (not only in tests) so the demo, the benchmark and the tests all price against the
same published figures, and so a config author has a working example to copy.
"""

from __future__ import annotations

from gateway.billing.tariff import Tariff

SEED_TARIFF = Tariff.model_validate(
    {
        "name": "Residential (seed bill)",
        "currency": "USD",
        "fixed_charges": [{"label": "Readiness to Serve", "amount": "15.00"}],
        "energy": {"kind": "tiered", "tiers": [{"up_to_kwh": "500", "rate": "0.10"}, {"rate": "0.12"}]},
        "kwh_surcharges": [{"label": "PSCR Surcharge", "rate": "0.00125"}],
        "fixed_surcharges": [{"label": "SAF Surcharge", "amount": "7.00"}],
    }
)
"""Dec 1-31 2025, 850 kWh → $15.00 + $50.00 + $42.00 + $1.06 + $7.00 = $115.06."""

TOU_TARIFF = Tariff.model_validate(
    {
        "name": "Residential time of use",
        "currency": "USD",
        "fixed_charges": [{"label": "Readiness to Serve", "amount": "15.00"}],
        "energy": {
            "kind": "tou",
            "windows": [
                {"label": "Off-peak", "rate": "0.08", "start_hour": 21, "end_hour": 15, "days": "weekday"},
                {"label": "On-peak", "rate": "0.24", "start_hour": 15, "end_hour": 21, "days": "weekday"},
                {"label": "Off-peak", "rate": "0.08", "start_hour": 0, "end_hour": 24, "days": "weekend"},
            ],
        },
        "kwh_surcharges": [{"label": "PSCR Surcharge", "rate": "0.00125"}],
        "fixed_surcharges": [{"label": "SAF Surcharge", "amount": "7.00"}],
    }
)
"""Weekday 15:00-21:00 on-peak, everything else (and weekends, holidays) off-peak."""
