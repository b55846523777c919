"""``meter-gateway bill``: the seed bill from stored intervals, exit codes, and the config checks behind it."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path

import pytest
from stellar_sdk import Keypair

from gateway.config import InvalidConfig, parse_config
from gateway.ledger.store import Ledger
from gateway.reports.service import meter_bill, site_period
from gateway.reports.source import ReadOnlyLedger
from tests.reports.conftest import DECEMBER_INTERVALS, NMI_HOUSE, TZ, Cli, Site, config_text


def test_seed_bill_for_december_from_stored_intervals_as_json(site: Site, gateway_cli: Cli) -> None:
    code, out, err = gateway_cli(["bill", "house", "--config", str(site.config_path), "--from", "2025-12-01",
                          "--to", "2026-01-01", "--json"])
    assert code == 0, err
    bill = json.loads(out)
    assert bill["meter"] == "house"
    assert bill["total_minor"] == 11506
    assert bill["total"] == "115.06"
    assert bill["energy_wh"] == 850_000
    assert bill["period"] == {"start": "2025-12-01", "end": "2026-01-01", "tz": TZ, "days": 31}
    assert bill["proration"] == "1"
    assert [(i["label"], i["quantity"], i["amount_minor"]) for i in bill["line_items"]] == [
        ("Readiness to Serve", "1", 1500),
        ("Usage Tier 1", "500", 5000),
        ("Usage Tier 2", "350", 4200),
        ("PSCR Surcharge", "850", 106),
        ("SAF Surcharge", "1", 700),
    ]
    assert bill["data"] == {"intervals_present": DECEMBER_INTERVALS, "intervals_expected": DECEMBER_INTERVALS,
                            "coverage": 1.0, "qualities": {"A": DECEMBER_INTERVALS}}


def test_bill_as_text_names_the_period_inclusively_and_adds_up(site: Site,
                                                                gateway_cli: Cli) -> None:
    code, out, _ = gateway_cli(["bill", "house", "--config", str(site.config_path), "--from", "2025-12-01",
                        "--to", "2026-01-01"])
    assert code == 0
    assert "Period 2025-12-01 to 2025-12-31 inclusive (31 days, America/Detroit), full billing cycle" in out
    assert "Usage Tier 2" in out
    assert "350 kWh @ 0.12" in out
    assert out.splitlines()[-3].split()[-1] == "115.06"
    assert "2976 of 2976 intervals (100.0%)" in out


def test_a_partial_period_is_prorated_from_the_same_intervals(site: Site, gateway_cli: Cli) -> None:
    code, out, _ = gateway_cli(["bill", "house", "--config", str(site.config_path), "--from", "2025-12-01",
                        "--to", "2025-12-16", "--json"])
    assert code == 0
    bill = json.loads(out)
    assert bill["days"] == 15
    assert bill["proration"] == "0.5"
    assert bill["line_items"][0]["amount_minor"] == 750
    assert bill["energy_wh"] == 850_000 * 15 * 96 // DECEMBER_INTERVALS


@pytest.mark.parametrize(
    ("meter", "end", "message"),
    [
        ("nobody", "2026-01-01", "no meter 'nobody' in the configuration (meters: house, shed, pv)"),
        ("shed", "2026-01-01", "meter 'shed' has no tariff"),
        ("house", "2025-12-01", "must be after start"),
    ],
)
def test_usage_and_config_problems_exit_2(site: Site, gateway_cli: Cli, meter: str, end: str,
                                          message: str) -> None:
    code, out, err = gateway_cli(["bill", meter, "--config", str(site.config_path), "--from", "2025-12-01",
                                  "--to", end])
    assert code == 2
    assert message in err
    assert not out


def test_bad_date_is_a_usage_error(site: Site, gateway_cli: Cli) -> None:
    with pytest.raises(SystemExit) as info:
        gateway_cli(["bill", "house", "--config", str(site.config_path), "--from", "1.12.2025", "--to", "2026-01-01"])
    assert info.value.code == 2


def test_missing_ledger_exits_1_and_creates_nothing(tmp_path: Path, gateway_cli: Cli) -> None:
    data_dir = tmp_path / "nowhere"
    config = tmp_path / "gateway.toml"
    config.write_text(config_text(data_dir), encoding="utf-8")
    code, _, err = gateway_cli(["bill", "house", "--config", str(config), "--from", "2025-12-01", "--to", "2026-01-01"])
    assert code == 1
    assert "no ledger at" in err
    assert not data_dir.exists(), "a report must never create an empty ledger"


async def test_reads_beside_an_open_writer_and_sees_only_committed_data(site: Site) -> None:
    cfg = site.cfg
    writer = await Ledger.open(site.data_dir, gateway_id="gw-test-reports", keypair=Keypair.random())
    try:
        async with await ReadOnlyLedger.open(site.data_dir) as reader:
            period = site_period(cfg, date(2025, 12, 1), date(2026, 1, 1))
            via_reader, via_writer = await asyncio.gather(meter_bill(reader, cfg, "house", period),
                                                          meter_bill(writer, cfg, "house", period))
    finally:
        await writer.close()
    assert via_reader.bill == via_writer.bill
    assert via_reader.bill.total_minor == 11506


def test_config_tariff_names_budgets_and_alert_topics_are_checked_with_lines(tmp_path: Path) -> None:
    text = config_text(tmp_path, alert_topic=None).replace('tariff = "seed"', 'tariff = "sede"')
    text = text.replace('budget_check_s = 60', 'budget_check_s = 60\ntariff = "flat"')
    text = text.replace('nmi = "NMI0000002"', 'nmi = "NMI0000002"\n  budget = "12.345"')
    with pytest.raises(InvalidConfig) as info:
        parse_config(text)
    problems = {p.path: p for p in info.value.problems}
    assert "no tariff named 'sede' (tariffs: 'seed')" in problems["buses[0].meters[0].tariff"].message
    assert problems["buses[0].meters[0].tariff"].line == text.splitlines().index('  tariff = "sede"') + 1
    assert "no tariff named 'flat'" in problems["billing.tariff"].message
    # shed's budget would use the (unknown) default tariff: reported against that name, not guessed
    assert "buses[0].meters[1].budget" not in problems or "decimal" in problems["buses[0].meters[1].budget"].message

    no_mqtt = config_text(tmp_path).split("[mqtt]")[0] + "[billing]\nalert_topic = \"a/{meter}\"\n"
    with pytest.raises(InvalidConfig) as info:
        parse_config(no_mqtt)
    assert any(p.path == "billing.alert_topic" and "no [mqtt] section" in p.message for p in info.value.problems)

    fine = config_text(tmp_path).replace('budget = "100.00"', 'budget = "100.001"')
    with pytest.raises(InvalidConfig) as info:
        parse_config(fine)
    assert [p.path for p in info.value.problems] == ["buses[0].meters[0].budget"]
    assert "more decimal places" in info.value.problems[0].message

    cfg = parse_config(config_text(tmp_path).replace('name = "Residential (seed bill)"\n', ""))
    assert cfg.tariffs["seed"].name == "seed", "a tariff's name defaults to its key"
    assert cfg.meter("house") is not None
    assert cfg.meter("house").nmi == NMI_HOUSE
