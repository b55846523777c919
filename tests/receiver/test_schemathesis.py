"""schemathesis (``--checks all``) against the receiver on each store: no failure, no warning.

An independent tool generates requests from ``cloud_sync/openapi.yaml`` (valid and invalid ones)
and checks every answer against it: status declared, body and headers as declared, no 5xx, invalid
input refused, valid input accepted, authentication enforced, 405 with ``Allow`` for other methods.
``schemathesis_hooks`` supplies the cross-field rules OpenAPI cannot state (the body's ``batch`` is
the ``Idempotency-Key``; a key is reused only with the same bytes) and real signed credits, so the
run reaches verification and storage; the test checks that it did. Examples are bounded to keep the
suite's time: run it by hand with a larger ``--max-examples`` to search harder.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from receiver_kit import GW, KEY
from test_receiver_cli import _admin, _receiver, _stop, _wait_ready

from cloud_sync.receiver import open_store
from gateway.web.server import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
MAX_EXAMPLES = 25
"""Cases per operation and phase: about 150 requests, 10-20 s per store on this machine."""
RUN_TIMEOUT_S = 300.0


async def _accepted(db: str) -> int:
    store = await open_store(db)
    try:
        return sum(row["credits"] for row in await store.summary(GW))
    finally:
        await store.close()


def test_schemathesis_finds_nothing_against_the_receiver(db_url: str, tmp_path: Path) -> None:
    token_file = tmp_path / "gw.token"
    enrolled = _admin(db_url, "enrol", GW, KEY.public_key, "--token-out", str(token_file))
    assert enrolled.returncode == 0, enrolled.stderr
    port = free_port()
    proc = _receiver(tmp_path, port, db=db_url, enroll=False)
    try:
        _wait_ready(proc, port)
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
               "PYTHONPATH": os.pathsep.join((str(HERE), str(REPO)))}
        run = subprocess.run([SCHEMATHESIS, "run", str(REPO / "cloud_sync" / "openapi.yaml"),
                              "--url", f"http://127.0.0.1:{port}", "--checks", "all", "--workers", "1",
                              "--max-examples", str(MAX_EXAMPLES), "--request-timeout", "30",
                              "-H", f"Authorization: Bearer {token_file.read_text().strip()}"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    finally:
        _stop(proc)
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "No issues found" in run.stdout, report
    assert "WARNINGS" not in run.stdout, report
    assert asyncio.run(_accepted(db_url)) > 0, "the run reached verification and storage: credits were accepted"
