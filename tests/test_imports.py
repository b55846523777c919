"""No import of what a configuration does not use: most of a box's memory is imported code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cloud_sync.billing_api import NAME
from gateway import daemon

HEAVY = ("stellar_sdk", "pymodbus", "aiomqtt", "httpx", "jinja2", "prometheus_client", "starlette", "uvicorn")

CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from gateway.clock import SystemClock
    from gateway.config import parse_config
    from gateway.daemon import run_daemon

    HEAVY = {heavy!r}
    cfg = parse_config(sys.stdin.read())

    async def main():
        stop = asyncio.Event()
        seen = {{}}

        def started(running):
            seen["loaded"] = sorted(m for m in HEAVY if m in sys.modules)
            stop.set()

        await run_daemon(cfg, SystemClock(), stop, on_started=started, final_sync_s=0)
        print(json.dumps(seen["loaded"]))

    asyncio.run(main())
""")


def _loaded_by_daemon(tmp_path: Path, config: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", CHILD.format(heavy=HEAVY)], input=config, capture_output=True,
                         text=True, timeout=60, check=True, cwd=tmp_path)
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


BASE = """
gateway_id = "gw-imports"
data_dir = "{data}"
[time]
trust = "always"
[web]
port = 0
enabled = {web}
[[buses]]
name = "rs485"
kind = "rtu"
device = "{data}/no-such-tty"
  [[buses.meters]]
  id = "m1"
  unit_id = 1
  profile = "eastron-sdm630"
"""


@pytest.mark.slow
def test_an_rtu_daemon_loads_neither_stellar_nor_pymodbus_nor_mqtt_nor_http_clients(tmp_path: Path) -> None:
    with_web = _loaded_by_daemon(tmp_path, BASE.format(data=tmp_path / "a", web="true"))
    assert with_web == ["starlette", "uvicorn"], "the page and API need only these; jinja2 and prometheus " \
                                                 "load at the first page view and scrape"
    assert _loaded_by_daemon(tmp_path, BASE.format(data=tmp_path / "b", web="false")) == []


@pytest.mark.slow
def test_what_is_configured_is_loaded(tmp_path: Path) -> None:
    config = BASE.format(data=tmp_path / "c", web="false") + """
[uplinks.billing_api]
url = "http://127.0.0.1:9"
[mqtt]
port = 9
  [[mqtt.meters]]
  id = "mq1"
  topic = "site/mq1"
  value_path = "ENERGY.Total"
"""
    assert _loaded_by_daemon(tmp_path, config) == ["aiomqtt", "httpx"]


def test_the_daemon_names_the_billing_uplink_as_the_uplink_does() -> None:
    assert daemon.BILLING_API == NAME
