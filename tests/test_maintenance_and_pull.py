"""Raw-reading retention, low disk, the pull API and the gateway identity."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from pathlib import Path

import httpx
from stellar_sdk import Keypair

from cloud_sync.credit import ChainTip, verify
from gateway import identity
from gateway.cli import main
from gateway.clock import ManualClock
from gateway.config.model import LedgerConfig
from gateway.intervals import Reading
from gateway.ledger.maintenance import maintain_once
from gateway.ledger.store import DB_FILE, Ledger
from gateway.status import GatewayStatus
from gateway.web.app import WebContext, create_app
from gateway.web.server import serving

T0_MS = 1_767_225_600_000
DAY_MS = 86_400_000


async def _filled(tmp_path: Path, days: int) -> tuple[Ledger, Keypair]:
    keypair = Keypair.random()
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=keypair)
    readings = [Reading(m, T0_MS + k * 900_000, 1000 + 50 * k) for m in ("a", "b") for k in range(days * 96 + 1)]
    await ledger.commit_readings(readings, now_ms=1)
    return ledger, keypair


def _count(tmp_path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(tmp_path / DB_FILE)) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


async def test_retention_then_low_disk_prunes_readings_never_billing_data(tmp_path: Path) -> None:
    ledger, _ = await _filled(tmp_path, days=10)
    clock = ManualClock(start=(T0_MS + 10 * DAY_MS) / 1000)
    status = GatewayStatus("gw", "G", clock.now())
    credits_before = _count(tmp_path, "credits")
    cfg = LedgerConfig(readings_retention_days=5, min_free_mb=100)

    pruned = await maintain_once(ledger, clock, tmp_path, cfg, status, free=10_000)
    assert pruned == 2 * 5 * 96  # five days of two meters went; the boundary reading stays
    assert not status.alarms

    pruned = await maintain_once(ledger, clock, tmp_path, cfg, status, free=50)
    assert _count(tmp_path, "readings") == 2, "only each meter's newest reading is left"
    assert "Disk low" in status.alarms["disk_low"]
    assert _count(tmp_path, "credits") == credits_before
    assert _count(tmp_path, "intervals") == credits_before

    await maintain_once(ledger, clock, tmp_path, cfg, status, free=10_000)
    assert not status.alarms, "the alarm clears when space is back"
    await ledger.close()


async def test_pull_api_pages_through_the_outbox_with_a_stable_cursor(tmp_path: Path) -> None:
    ledger, keypair = await _filled(tmp_path, days=1)
    status = GatewayStatus("gw", keypair.public_key, 0)
    app = create_app(WebContext(status, ledger, ManualClock(), "tok", ()))
    try:
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/api/v1/credits")).status_code == 401
            auth = {"Authorization": "Bearer tok"}
            cursor, items, pages = 0, [], 0
            while True:
                page = (await http.get("/api/v1/credits", params={"after": cursor, "limit": 50},
                                       headers=auth)).json()
                items += [c["item"] for c in page["credits"]]
                cursor = page["next_cursor"]
                pages += 1
                if not page["more"]:
                    break
            again = (await http.get("/api/v1/credits", params={"after": 0, "limit": 3}, headers=auth)).json()
            assert (await http.get("/api/v1/credits", params={"limit": 0}, headers=auth)).status_code == 400
    finally:
        await ledger.close()
    assert len(items) == 2 * 96
    assert pages == 4
    assert [c["item"] for c in again["credits"]] == items[:3], "same cursor, same bytes"
    tips: dict[str, ChainTip] = {}
    for item in items:  # what is pulled verifies like what is pushed
        body, digest = verify(item, expected_key=keypair.public_key, tip=tips.get(item["credit"]["meter"]))
        tips[body["meter"]] = ChainTip(body["seq"], digest)


def test_identity_key_file_is_private_and_the_secret_never_printed(tmp_path: Path,
                                                                  capsys: object) -> None:
    # Everything the command writes (its output and its logs, which go to stderr) is captured.
    assert main(["identity", "--data-dir", str(tmp_path)]) == 0
    first = capsys.readouterr()  # type: ignore[attr-defined]
    public = first.out.strip()
    path = identity.key_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert public.startswith("G")
    assert Keypair.from_secret(secret).public_key == public
    assert main(["identity", "--data-dir", str(tmp_path)]) == 0, "second call reuses the key"
    second = capsys.readouterr()  # type: ignore[attr-defined]
    assert second.out.strip() == public
    assert secret not in first.out + first.err + second.out + second.err
    os.chmod(path, 0o644)
    assert main(["identity", "--data-dir", str(tmp_path)]) == 2, "a readable key file is refused"
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "chmod 600" in err
    assert secret not in err
