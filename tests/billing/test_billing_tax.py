"""Percentage taxes: on the sum of rounded pre-tax line items, each rounded half-up, not prorated."""

from __future__ import annotations

from datetime import date
from fractions import Fraction

from gateway.billing import BillingPeriod, LineKind, Tax, compute_bill
from gateway.billing.samples import SEED_TARIFF


def _tax(label: str, percent: str) -> Tax:
    return Tax.model_validate({"label": label, "percent": percent})


DECEMBER = BillingPeriod(date(2025, 12, 1), date(2026, 1, 1), "America/Detroit")


def test_sales_tax_on_seed_bill() -> None:
    # Base = 115.06 (all five seed lines). 6 % of 115.06 = 6.9036 → 6.90. Total 121.96.
    tariff = SEED_TARIFF.model_copy(update={"taxes": (_tax("Sales tax", "6"),)})

    bill = compute_bill(tariff, 850_000, DECEMBER)

    tax = bill.line_items[-1]
    assert (tax.kind, tax.label, tax.quantity, tax.unit, str(tax.rate)) == (
        LineKind.TAX,
        "Sales tax",
        Fraction(11506, 100),
        "USD",
        "0.06",
    )
    assert tax.amount_minor == 690
    assert bill.total_minor == 12196
    assert bill.line_items[-1].to_dict()["quantity"] == "115.06"


def test_two_taxes_share_one_base_and_round_half_up() -> None:
    # Base = 115.06. 2.5 % → 2.8765 → 2.88; 4 % → 4.6024 → 4.60 (on 115.06, not on 115.06 + 2.88).
    tariff = SEED_TARIFF.model_copy(update={"taxes": (_tax("State", "2.5"), _tax("City", "4"))})
    bill = compute_bill(tariff, 850_000, DECEMBER)
    assert [i.amount_minor for i in bill.line_items[-2:]] == [288, 460]
    assert bill.total_minor == 11506 + 288 + 460


def test_tax_exact_half_cent_rounds_up() -> None:
    # 859 kWh: 15.00 + 50.00 + 359 × 0.12 = 43.08 + PSCR 859 × 0.00125 = 1.07375 → 1.07 + 7.00
    # = 116.15. At 50 % the tax is exactly 58.075 → 58.08 (a half rounds away from zero).
    tariff = SEED_TARIFF.model_copy(update={"taxes": (_tax("Half", "50"),)})
    bill = compute_bill(tariff, 859_000, DECEMBER)
    base = sum(i.amount_minor for i in bill.line_items[:-1])
    assert base == 11615
    assert bill.line_items[-1].amount_minor == 5808


def test_tax_is_not_prorated_on_a_stub_period() -> None:
    # 19-day stub: pre-tax 58.67 (see test_billing_proration); 6 % = 3.5202 → 3.52.
    tariff = SEED_TARIFF.model_copy(update={"taxes": (_tax("Sales tax", "6"),)})
    bill = compute_bill(tariff, 400_000, BillingPeriod(date(2025, 12, 13), date(2026, 1, 1), "America/Detroit"))
    assert bill.line_items[-1].amount_minor == 352
    assert bill.total_minor == 5867 + 352
