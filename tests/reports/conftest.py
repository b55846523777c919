"""A site with a real ledger holding December 2025 (plus a day either side) for the reporting tests.

Meter ``house`` uses exactly 850 kWh between local midnights of 2025-12-01 and 2026-01-01 in
America/Detroit (the seed bill), 28.8 kWh/day outside it; meter ``shed`` draws 100 Wh per interval
with a two-hour gap on 2025-12-05 (estimated intervals); ``pv`` is an MQTT meter without data,
NMI or tariff. The ledger is built once per session through ``Ledger.commit_readings``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from stellar_sdk import Keypair

from gateway import cli
from gateway.config import GatewayConfig, load_config
from gateway.intervals import Reading
from gateway.ledger.store import Ledger

TZ = "America/Detroit"
ZONE = ZoneInfo(TZ)
START = datetime(2025, 11, 30, tzinfo=ZONE)
DEC_1 = datetime(2025, 12, 1, tzinfo=ZONE)
JAN_1 = datetime(2026, 1, 1, tzinfo=ZONE)
END = datetime(2026, 1, 1, 2, tzinfo=ZONE)
DECEMBER_WH = 850_000
DECEMBER_INTERVALS = 31 * 96
OUTSIDE_WH = 300
SHED_WH = 100
SHED_GAP = (datetime(2025, 12, 5, 10, tzinfo=ZONE), datetime(2025, 12, 5, 12, tzinfo=ZONE))
NMI_HOUSE = "NMI0000001"
NMI_SHED = "NMI0000002"


def _ts(t: datetime) -> int:
    return int(t.astimezone(UTC).timestamp())


def house_register(i: int) -> int:
    """Register after ``i`` intervals from START: exactly 850 kWh across December's 2976 intervals."""
    before = (_ts(DEC_1) - _ts(START)) // 900
    if i <= before:
        return 5_000_000 + OUTSIDE_WH * i
    december = min(i - before, DECEMBER_INTERVALS)
    after = max(0, i - before - DECEMBER_INTERVALS)
    return 5_000_000 + OUTSIDE_WH * before + DECEMBER_WH * december // DECEMBER_INTERVALS + OUTSIDE_WH * after


def readings() -> list[Reading]:
    n = (_ts(END) - _ts(START)) // 900
    out = []
    for i in range(n + 1):
        t = _ts(START) + 900 * i
        out.append(Reading("house", t * 1000, house_register(i)))
        if not _ts(SHED_GAP[0]) < t < _ts(SHED_GAP[1]):
            out.append(Reading("shed", t * 1000, 1_000 + SHED_WH * i))
    return sorted(out, key=lambda r: r.t_ms)


def config_text(data_dir: Path, *, mqtt_port: int = 1883, budget: str = "100.00",
                alert_topic: str | None = "gw/budget/{meter}", extra: str = "") -> str:
    topic = f'alert_topic = "{alert_topic}"' if alert_topic else ""
    return f'''
gateway_id = "gw-test-reports"
site_timezone = "{TZ}"
data_dir = "{data_dir}"

[[buses]]
name = "main"
host = "127.0.0.1"

  [[buses.meters]]
  id = "house"
  unit_id = 1
  profile = "eastron-sdm630"
  nmi = "{NMI_HOUSE}"
  tariff = "seed"
  budget = "{budget}"

  [[buses.meters]]
  id = "shed"
  unit_id = 2
  profile = "eastron-sdm630"
  nmi = "{NMI_SHED}"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

  [[mqtt.meters]]
  id = "pv"
  topic = "tele/pv/SENSOR"
  value_path = "ENERGY.Total"

[billing]
period_start_day = 1
projection_method = "DAILY_AVERAGE"
budget_check_s = 60
nem12_from_participant = "GATEWAY"
nem12_to_participant = "RETAILER"
{topic}
{extra}

[tariffs.seed]
name = "Residential (seed bill)"
currency = "USD"
fixed_charges = [{{ label = "Readiness to Serve", amount = "15.00" }}]
kwh_surcharges = [{{ label = "PSCR Surcharge", rate = "0.00125" }}]
fixed_surcharges = [{{ label = "SAF Surcharge", amount = "7.00" }}]

[tariffs.seed.energy]
kind = "tiered"
tiers = [{{ up_to_kwh = "500", rate = "0.10" }}, {{ rate = "0.12" }}]
'''


@dataclass(frozen=True)
class Site:
    data_dir: Path
    config_path: Path

    @property
    def cfg(self) -> GatewayConfig:
        return load_config(self.config_path)

    def write_config(self, path: Path, *, mqtt_port: int = 1883, budget: str = "100.00",
                     alert_topic: str | None = "gw/budget/{meter}", extra: str = "") -> Path:
        """A config for this site's ledger with other MQTT/budget settings."""
        path.write_text(config_text(self.data_dir, mqtt_port=mqtt_port, budget=budget, alert_topic=alert_topic,
                                    extra=extra), encoding="utf-8")
        return path


async def _fill(data_dir: Path) -> None:
    ledger = await Ledger.open(data_dir, gateway_id="gw-test-reports", keypair=Keypair.random())
    try:
        await ledger.commit_readings(readings(), now_ms=_ts(END) * 1000)
    finally:
        await ledger.close()


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("site")
    data_dir = root / "data"
    asyncio.run(_fill(data_dir))
    config_path = root / "gateway.toml"
    config_path.write_text(config_text(data_dir), encoding="utf-8")
    return Site(data_dir, config_path)


Cli = Callable[[list[str]], tuple[int, str, str]]


@pytest.fixture
def gateway_cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """``gateway.cli.main(argv)`` -> (exit code, stdout, stderr)."""

    def run(argv: list[str]) -> tuple[int, str, str]:
        code = cli.main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return run
