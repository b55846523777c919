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

HEAVY = ("stellar_sdk", "pydantic", "pymodbus", "aiomqtt", "httpx", "jinja2", "prometheus_client", "starlette",
         "uvicorn")

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


SERVED = textwrap.dedent("""
    import asyncio, json, sys, urllib.request
    from gateway.clock import SystemClock
    from gateway.config import parse_config
    from gateway.daemon import run_daemon

    cfg = parse_config(sys.stdin.read())

    def get(port, token, path):
        req = urllib.request.Request(f"http://127.0.0.1:{{port}}{{path}}",
                                     headers={{"Authorization": f"Bearer {{token}}"}})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status

    async def main():
        stop = asyncio.Event()
        seen = {{}}

        async def visit(running):
            for path in ("/", "/api/v1/meters", "/api/v1/lines", "/metrics"):
                seen[path] = await asyncio.to_thread(get, running.web_port, running.web_token, path)
            seen["loaded"] = sorted(m for m in {never!r} if m in sys.modules)
            stop.set()

        tasks = []
        await run_daemon(cfg, SystemClock(), stop, on_started=lambda r: tasks.append(asyncio.create_task(visit(r))),
                         final_sync_s=0)
        print(json.dumps(seen))

    asyncio.run(main())
""")


@pytest.mark.slow
def test_a_daemon_without_stellar_never_imports_pydantic_nor_stellar_sdk(tmp_path: Path) -> None:
    """The 16-meter RTU box's memory budget (issue 11: at most 42 MiB) has no room for pydantic (~13 MiB with
    the schemas it builds) nor stellar-sdk (~40 MiB): the configuration, the firmware profiles and the tariffs
    are checked by gateway.schema, and the [stellar]/[p2p]/[soroban] sections' pydantic models load only when
    the file has them. Nor rich, which structlog would import if it could (see gateway/__init__.py). A tariff
    and a budget are configured too, and the page, the API and the metrics are each asked for once."""
    never = ("pydantic", "pydantic_core", "stellar_sdk", "rich")
    config = BASE.format(data=tmp_path / "d", web="true").replace('profile = "eastron-sdm630"', (
        'profile = "eastron-sdm630"\n  tariff = "home"\n  budget = "120.00"')) + """
[tariffs.home]
currency = "EUR"
energy = { kind = "tiered", tiers = [{ up_to_kwh = "500", rate = "0.30" }, { rate = "0.35" }] }
"""
    out = subprocess.run([sys.executable, "-c", SERVED.format(never=never)], input=config, capture_output=True,
                         text=True, timeout=90, check=True, cwd=tmp_path)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert [seen[p] for p in ("/", "/api/v1/meters", "/api/v1/lines", "/metrics")] == [200] * 4
    assert seen["loaded"] == []


@pytest.mark.slow
def test_a_stellar_section_is_checked_without_pydantic_nor_stellar_sdk(tmp_path: Path) -> None:
    """[stellar] is a gateway.schema record: ``check-config`` of such a file needs neither pydantic nor
    stellar-sdk (its keys are checked by their StrKey checksum)."""
    out = subprocess.run([sys.executable, "-c", (
        "import sys; from gateway.config import parse_config; from gateway.config.stellar import StellarConfig\n"
        "cfg = parse_config(sys.stdin.read())\n"
        "print(type(cfg.stellar) is StellarConfig,\n"
        "      sorted(m for m in ('pydantic', 'stellar_sdk') if m in sys.modules))")],
        input=_stellar_config(tmp_path), capture_output=True, text=True, timeout=60, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "True []"


STELLAR_CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from gateway.clock import SystemClock
    from gateway.config import parse_config
    from gateway.daemon import run_daemon

    NEVER = {never!r}
    cfg = parse_config(sys.stdin.read())

    def models(base):
        for sub in base.__subclasses__():
            yield sub
            yield from models(sub)

    async def main():
        stop = asyncio.Event()
        seen = {{}}

        def started(running):
            import pydantic  # stellar-sdk's own (its exceptions module imports its RPC models)
            seen["models"] = sorted({{m.__module__ for m in models(pydantic.BaseModel)
                                     if m.__module__.startswith(("gateway", "cloud_sync"))}})
            seen["loaded"] = sorted(m for m in NEVER if m in sys.modules)
            seen["sdk"] = "stellar_sdk" in sys.modules
            seen["client"] = "cloud_sync.horizon_http" in sys.modules
            stop.set()

        await run_daemon(cfg, SystemClock(), stop, on_started=started, final_sync_s=0)
        print(json.dumps(seen))

    asyncio.run(main())
""")


@pytest.mark.slow
def test_a_stellar_daemon_builds_no_pydantic_model_and_loads_no_stellar_tool(tmp_path: Path) -> None:
    """Issue 11: a daemon with [stellar] may cost no more than the peer's 69.7 MiB, and stellar-sdk's own import
    is ~26 MiB of it. What the gateway adds is checked here: no pydantic model of its own (the [stellar]
    model's schema cost 1.2 MiB), none of the Stellar commands' modules (onboarding, invoices, the CLI),
    the local Horizon ledger or the [p2p] section's models, which only other commands and sections use, and no
    second HTTP library (httpx and httpcore, about 2 MiB) beside stellar-sdk's requests."""
    never = ("cloud_sync.stellar.cli", "cloud_sync.stellar.onboarding", "cloud_sync.stellar.invoice",
             "cloud_sync.horizon", "cloud_sync.soroban", "gateway.config.p2p",
             "httpx")  # Horizon goes through the requests that stellar-sdk loads anyway (cloud_sync.horizon_http)
    out = subprocess.run([sys.executable, "-c", STELLAR_CHILD.format(never=never)], input=_stellar_config(tmp_path),
                         capture_output=True, text=True, timeout=90, check=True, cwd=tmp_path)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"models": [], "loaded": [], "sdk": True, "client": True}


def _stellar_config(tmp_path: Path) -> str:
    from stellar_sdk import Keypair

    from gateway.config.stellar import is_account_id

    issuer, platform = Keypair.random().public_key, Keypair.random().public_key
    assert is_account_id(issuer)
    return BASE.format(data=tmp_path / "e", web="false").replace(
        'profile = "eastron-sdm630"', 'profile = "eastron-sdm630"\n  serial = "A1"') + (
        '[stellar]\nhorizon_url = "http://127.0.0.1:9"\nnetwork_passphrase = "Standalone Network ; February 2017"\n'
        f'asset_code = "KWH"\nasset_issuer = "{issuer}"\nplatform_signer = "{platform}"\nrate = "0.001"\n')


def test_the_daemon_names_the_billing_uplink_as_the_uplink_does() -> None:
    assert daemon.BILLING_API == NAME


def test_deferred_web_routes_are_the_modules_routes() -> None:
    """The report and bill routes load at their first request (gateway.web.deferred): the paths the app
    declares for them are exactly those their modules build, so none is lost or shadowed."""
    from gateway.reports.web import report_routes
    from gateway.web import app
    from gateway.web.bills import bill_routes

    ctx, cfg = object(), object()
    assert tuple(r.path for r in report_routes(ctx, cfg)) == app.REPORT_PATHS
    assert tuple(r.path for r in bill_routes(ctx, None)) == app.BILL_PATHS
