"""The central pull client against real gateways' local APIs, into each store.

Real ledgers full of signed credits, served by the gateway's own web app over HTTP; the client
pulls ``/api/v1/credits`` with each box's web token, verifies like a push, stores each credit
once and resumes from the cursor it stored with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from stellar_sdk import Keypair

from cloud_sync.receiver import CreditStore
from cloud_sync.receiver.cli import main
from cloud_sync.receiver.pull import PullSource, load_sources, pull_round
from gateway.clock import ManualClock
from gateway.intervals import Reading
from gateway.ledger.store import Ledger
from gateway.status import GatewayStatus
from gateway.web.app import WebContext, create_app
from gateway.web.server import serving

T0_MS = 1_767_225_600_000
WEB_TOKEN = "box-web-token"


def _readings(meter: str, first: int, last: int) -> list[Reading]:
    return [Reading(meter, T0_MS + k * 900_000, 1000 + 40 * k) for k in range(first, last + 1)]


@contextlib.asynccontextmanager
async def _box(path: Path, gateway: str, keypair: Keypair) -> AsyncIterator[tuple[Ledger, str]]:
    """A gateway's ledger served by its own web app; yields the ledger and the app's URL."""
    ledger = await Ledger.open(path, gateway_id=gateway, keypair=keypair)
    try:
        app = create_app(WebContext(GatewayStatus(gateway, keypair.public_key, 0), ledger, ManualClock(), WEB_TOKEN,
                                    ()))
        async with serving(app) as url:
            yield ledger, url
    finally:
        await ledger.close()


def _gateways_file(tmp_path: Path, boxes: list[tuple[str, str]]) -> Path:
    (tmp_path / "web.token").write_text(WEB_TOKEN + "\n")
    path = tmp_path / "gateways.toml"
    path.write_text("".join(f'[[gateway]]\nid = "{g}"\nurl = "{u}"\ntoken_file = "web.token"\n\n' for g, u in boxes))
    return path


async def test_pulls_many_gateways_once_each_and_resumes_from_the_stored_cursor(backend: CreditStore,
                                                                               tmp_path: Path) -> None:
    keys = {f"box-{n}": Keypair.random() for n in range(3)}
    for gateway, key in keys.items():
        await backend.ensure_enrolled(gateway, key.public_key, 0)
    async with contextlib.AsyncExitStack() as stack:
        boxes = {g: await stack.enter_async_context(_box(tmp_path / g, g, k)) for g, k in keys.items()}
        for ledger, _ in boxes.values():
            await ledger.commit_readings(_readings("a", 0, 60) + _readings("b", 0, 60), now_ms=1)
        sources = load_sources(_gateways_file(tmp_path, [(g, u) for g, (_, u) in boxes.items()]))

        # Two pull workers at once over the same gateways: every credit is still stored once.
        first, second = await asyncio.gather(pull_round(backend, sources, limit=25),
                                             pull_round(backend, sources, limit=25))
        for one, two in zip(first, second, strict=True):
            assert (one.error, two.error) == (None, None)
            assert one.accepted + two.accepted == 120, "each credit accepted by exactly one worker"
            assert one.cursor == two.cursor == 120
        for ledger, _ in boxes.values():  # new intervals on the boxes; the next round pulls only those
            await ledger.commit_readings(_readings("a", 61, 70), now_ms=2)
        again = await pull_round(backend, sources, limit=25)
    assert [(r.pulled, r.accepted, r.duplicate, r.cursor) for r in again] == [(10, 10, 0, 130)] * 3
    for gateway in keys:
        meters = {row["meter"]: row for row in await backend.summary(gateway)}
        assert (meters["a"]["credits"], meters["a"]["last_seq"], meters["b"]["credits"]) == (70, 70, 60)
        assert meters["a"]["wh"] == 70 * 40
        assert await backend.pull_cursor(gateway) == 130


async def test_a_rejected_credit_keeps_the_cursor_before_it_until_the_cause_is_fixed(backend: CreditStore,
                                                                                    tmp_path: Path) -> None:
    key = Keypair.random()
    await backend.ensure_enrolled("box", Keypair.random().public_key, 0)  # enrolled with the wrong key
    async with _box(tmp_path / "box", "box", key) as (ledger, url):
        await ledger.commit_readings(_readings("a", 0, 30), now_ms=1)
        sources = [PullSource("box", url, WEB_TOKEN)]
        (refused,) = await pull_round(backend, sources, limit=10)
        assert refused.rejected == 10
        assert refused.cursor == 0
        assert "wrong_key" in (refused.error or "")
        await backend.revoke("box", 1)
        await backend.enrol("box", key.public_key, None, 2)  # the enrolment is corrected
        (fixed,) = await pull_round(backend, sources, limit=10)
    assert (fixed.error, fixed.accepted, fixed.cursor) == (None, 30, 30)


async def test_the_pull_command_reports_each_gateway_and_fails_on_a_wrong_web_token(db_url: str,
                                                                                     backend: CreditStore,
                                                                                     tmp_path: Path) -> None:
    key = Keypair.random()
    await backend.ensure_enrolled("box", key.public_key, 0)
    async with _box(tmp_path / "box", "box", key) as (ledger, url):
        await ledger.commit_readings(_readings("a", 0, 12), now_ms=1)
        gateways = _gateways_file(tmp_path, [("box", url)])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = await asyncio.to_thread(main, ["pull", "--db", db_url, "--gateways", str(gateways), "--once"])
        assert code == 0
        assert "box: pulled 12 (accepted 12, duplicate 0, rejected 0), cursor 12" in out.getvalue()
        (tmp_path / "web.token").write_text("not-the-token\n")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = await asyncio.to_thread(main, ["pull", "--db", db_url, "--gateways", str(gateways), "--once"])
    assert code == 1
    assert "HTTP 401" in out.getvalue()
    assert "web.token" in out.getvalue()


def test_a_gateways_file_with_a_mistake_is_refused_with_the_entry(tmp_path: Path) -> None:
    from cloud_sync.receiver.store import ReceiverConfigError

    path = tmp_path / "gateways.toml"
    path.write_text('[[gateway]]\nid = "box"\nurl = "ftp://x"\ntoken_file = "t"\n')
    with pytest.raises(ReceiverConfigError, match="gateway #1: url"):
        load_sources(path)
