"""A key without its ledger never starts new chains silently; both documented recoveries work.

The review's reproduction: moving a damaged ledger aside, as the error advised, started a new
ledger under the same key. Every meter restarted at seq 1, the billing system answered ``replay``
to each credit, and the uplink was blocked for good with no warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from stellar_sdk import Keypair

from cloud_sync.credit import ChainTip, CreditBody, sign, verify
from gateway import identity
from gateway.cli import main
from gateway.errors import LedgerMissing
from gateway.intervals import Reading
from gateway.ledger import lineage, recovery
from gateway.ledger.store import DB_FILE, Ledger
from gateway.sim.demo import GATEWAY_ID, DemoState, check_conservation
from tests.conftest import free_port, wait_for_port

T0 = 1_767_225_600_000
PY = sys.executable


async def _used_ledger(data: Path, keypair: Keypair) -> None:
    ledger = await Ledger.open(data, gateway_id="gw", keypair=keypair)
    await ledger.commit_readings([Reading("m", T0 + k * 60_000, 1000 + 10 * k) for k in range(61)], now_ms=1)
    await ledger.close()


def _move_ledger_aside(data: Path) -> None:
    aside = data / "damaged"
    aside.mkdir()
    for name in (DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm"):
        if (data / name).exists():
            os.replace(data / name, aside / name)


async def test_a_key_whose_ledger_is_gone_may_not_start_new_chains(tmp_path: Path) -> None:
    keypair = identity.load_or_create(tmp_path)
    await _used_ledger(tmp_path, keypair)
    _move_ledger_aside(tmp_path)
    with pytest.raises(LedgerMissing) as refused:
        await Ledger.open(tmp_path, gateway_id="gw", keypair=keypair)
    assert "recover-chains" in str(refused.value)
    assert "identity --new-key" in str(refused.value)
    assert not (tmp_path / DB_FILE).exists(), "no new ledger was started"
    # A new gateway id is a new identity at the billing system: new chains are right there.
    ledger = await Ledger.open(tmp_path, gateway_id="gw-renamed", keypair=keypair)
    await ledger.close()


async def test_a_first_start_after_the_key_was_made_is_not_a_lost_ledger(tmp_path: Path) -> None:
    keypair = identity.load_or_create(tmp_path)  # the installer prints the key before the first start
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=keypair)
    await ledger.close()
    assert lineage.read(tmp_path) == lineage.Lineage("gw", keypair.public_key)


async def test_a_ledger_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    await _used_ledger(tmp_path, Keypair.random())
    with pytest.raises(Exception, match="signed by key"):
        await Ledger.open(tmp_path, gateway_id="gw", keypair=Keypair.random(), require_own_key=True)


async def test_new_key_moves_the_old_key_aside_only_once_the_ledger_is_gone(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    old = identity.load_or_create(tmp_path)
    await _used_ledger(tmp_path, old)
    assert main(["identity", "--data-dir", str(tmp_path), "--new-key"]) == 1, "refused while the ledger is there"
    assert "still exists" in capsys.readouterr().err
    _move_ledger_aside(tmp_path)
    assert main(["identity", "--data-dir", str(tmp_path), "--new-key"]) == 0
    new = capsys.readouterr().out.strip()
    assert new != old.public_key
    assert identity.load(tmp_path / "gateway.key.replaced-1").public_key == old.public_key, "the old key is kept"
    assert (tmp_path / "ledger.lineage.replaced-1").exists()
    ledger = await Ledger.open(tmp_path, gateway_id="gw", keypair=identity.load(identity.key_path(tmp_path)))
    await ledger.close()


def _credit(keypair: Keypair, seq: int, start: int, reg: int, prev: str, *, kind: str = "interval",
            corrects: int | None = None, wh: int = 100) -> dict[str, Any]:
    body = CreditBody("gw", keypair.public_key, "m", seq, start, start + 900, wh, "A", reg, reg + 100, prev, 1,
                      kind=kind, corrects=corrects)
    return sign(body, keypair).to_wire()


def test_the_tip_is_the_last_credit_and_the_energy_goes_on_from_the_newest_boundary() -> None:
    key = Keypair.random()
    first = _credit(key, 1, 900_000, 1000, "0" * 64)
    second = _credit(key, 2, 901_800, 1200, first["hash"])
    correction = _credit(key, 3, 900_000, 1000, second["hash"], kind="correction", corrects=1, wh=5)
    tip = recovery.tip_from_credits("m", "gw", key.public_key, [first, second, correction])
    assert tip is not None
    assert (tip.seq, tip.hash) == (3, correction["hash"]), "the chain goes on after the correction"
    assert (tip.end, tip.register_end_wh) == (901_800 + 900, 1300), "the energy from the newest interval's end"
    assert recovery.tip_from_credits("m", "gw", key.public_key, []) is None
    forged = json.loads(json.dumps(second))
    forged["credit"]["wh"] = 999
    with pytest.raises(recovery.RecoveryError, match="hash"):
        recovery.tip_from_credits("m", "gw", key.public_key, [first, forged])
    with pytest.raises(recovery.RecoveryError, match="billing_api"):
        recovery.tip_from_credits("other", "gw", key.public_key, [first])


def _demo(data: Path, url: str, token: Path, duration: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "gateway", "demo", "--speed", "900", "--web-port", "0", "--data-dir", str(data),
                           "--receiver", url, "--receiver-token-file", str(token), "--duration", str(duration),
                           "--no-stellar"],  # the billing chains are under test; a 3-s run need not pay Stellar too
                          capture_output=True, text=True, timeout=120, check=False)


def _received(db_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Each chain the receiver holds, named as recover-chains names it: ``meter`` (import), ``meter export``."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        out: dict[str, list[dict[str, Any]]] = {}
        for meter, channel, wire in db.execute("SELECT meter, channel, wire FROM credits ORDER BY meter, channel, seq"):
            out.setdefault(meter if channel == "import" else f"{meter} {channel}", []).append(json.loads(wire))
    return out


def test_recovery_from_a_real_receiver_continues_every_chain(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "gateway"
    key = identity.load_or_create(data).public_key
    token = tmp_path / "api.token"
    token.write_text("recovery-test-token\n")
    token.chmod(0o600)
    receiver_db = tmp_path / "receiver.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with subprocess.Popen([PY, "-m", "cloud_sync.receiver", "--db", str(receiver_db), "--port", str(port),
                           "--enroll", f"{GATEWAY_ID}={key}", "--token-file", str(token)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as receiver:
        try:
            wait_for_port(port)
            first = _demo(data, url, token, 3)
            assert first.returncode == 0, first.stderr[-3000:]
            before = {m: [c["credit"]["seq"] for c in cs] for m, cs in _received(receiver_db).items()}
            assert len([name for name in before if " " not in name]) == 5, "every meter's import chain"
            assert all(before.values()), "every meter has credits at the receiver"

            _move_ledger_aside(data)  # as the advice for a damaged ledger says
            # The same commands as a user's, in this process (they are refused or done in well under a second).
            capsys.readouterr()
            assert main(["demo", "--speed", "900", "--web-port", "0", "--data-dir", str(data), "--receiver", url,
                         "--receiver-token-file", str(token), "--duration", "3", "--no-stellar"]) == 1
            refused = capsys.readouterr()
            assert "Traceback" not in refused.out + refused.err
            assert "recover-chains" in refused.err
            assert not (data / DB_FILE).exists(), "no new chain was started"

            assert main(["recover-chains", "--config", str(data / "gateway.toml")]) == 0
            recovered = capsys.readouterr().out
            for meter, seqs in before.items():
                assert f"{meter}: continues after seq {seqs[-1]} " in recovered

            again = _demo(data, url, token, 3)
            assert again.returncode == 0, again.stderr[-3000:]
        finally:
            receiver.send_signal(signal.SIGTERM)
            receiver.wait(timeout=10)

    after = _received(receiver_db)
    for meter, credits in after.items():
        seqs = [c["credit"]["seq"] for c in credits]
        assert seqs == list(range(1, len(seqs) + 1)), f"{meter}: no gap, no replay"
        assert len(seqs) > len(before.get(meter, [])), f"{meter}: the receiver accepted the credits after the recovery"
        tip = None
        for item in credits:  # one chain, verified link by link across the recovery
            body, digest = verify(item, expected_key=key, tip=tip)
            tip = ChainTip(body["seq"], digest)
    report = check_conservation(receiver_db, DemoState.load_or_create(data, 0).epoch)
    for meter, r in report.items():
        assert r["exact"], f"{meter}: {r['credited_wh']} Wh credited, register moved {r['register_delta_wh']} Wh"
