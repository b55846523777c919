"""``python -m cloud_sync.receiver`` as an operator runs it: tokens, enrolment, refusals without tracebacks."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from pathlib import Path

import httpx
from receiver_kit import GW, KEY, TOKEN, batch_bytes, honest_chain

from cloud_sync.receiver.cli import main
from gateway.web.server import free_port

PY = sys.executable
START_S = 20.0
"""A receiver starts in well under a second; this bounds a slow start on a loaded CI box."""


def _receiver(tmp_path: Path, port: int, *extra: str, db: str | None = None,
              enroll: bool = True) -> subprocess.Popen[str]:
    enrolment = ["--enroll", f"{GW}={KEY.public_key}"] if enroll else []
    return subprocess.Popen([PY, "-m", "cloud_sync.receiver", "--db", db or str(tmp_path / "r.db"), "--port",
                             str(port), *enrolment, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _admin(db: str, *args: str) -> subprocess.CompletedProcess[str]:
    """An admin command run in this process (what ``python -m cloud_sync.receiver`` runs, a second faster)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([args[0], "--db", db, *args[1:]])
        except SystemExit as exc:  # argparse refusing the usage
            code = int(exc.code or 0)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _wait_ready(proc: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"receiver exited: {proc.communicate()}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("receiver did not start")


def _exit(proc: subprocess.Popen[str]) -> str:
    """Its stderr once it has exited by itself; a receiver still running then is stopped and fails the test."""
    try:
        return proc.communicate(timeout=START_S)[1]
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise AssertionError("the receiver started serving instead of refusing to start") from None


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.terminate()
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def _post(port: int, token: str | None) -> httpx.Response:
    headers = {"Idempotency-Key": "k1", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"http://127.0.0.1:{port}/v1/batches", content=batch_bytes(honest_chain(1), "k1"),
                      headers=headers, timeout=10)


def test_without_a_token_file_only_enrolled_gateways_own_tokens_get_in(tmp_path: Path) -> None:
    port = free_port()
    proc = _receiver(tmp_path, port)
    try:
        _wait_ready(proc, port)
        assert _post(port, None).status_code == 401
        assert _post(port, TOKEN).status_code == 401, "no shared token: nothing but a gateway's own token"
    finally:
        _, err = _stop(proc)
    assert "no gateway can authenticate yet" in err
    assert "enrol" in err


def test_an_empty_or_missing_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    for path in (empty, tmp_path / "missing.token"):
        proc = _receiver(tmp_path, free_port(), "--token-file", str(path))
        err = _exit(proc)
        assert proc.returncode == 2, err
        assert str(path) in err
        assert "Traceback" not in err


def test_a_malformed_enrolment_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text(TOKEN)
    for bad in ("gw-1", "gw-1=not-a-key", f"bad id={KEY.public_key}"):
        proc = subprocess.run([PY, "-m", "cloud_sync.receiver", "--db", str(tmp_path / "r.db"), "--enroll", bad,
                               "--token-file", str(token)], capture_output=True, text=True, timeout=START_S)
        assert proc.returncode == 2, proc.stderr
        assert "--enroll" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_with_a_token_file_only_the_token_is_let_in(tmp_path: Path) -> None:
    token = tmp_path / "api.token"
    token.write_text(TOKEN + "\n")
    port = free_port()
    proc = _receiver(tmp_path, port, "--token-file", str(token))
    try:
        _wait_ready(proc, port)
        assert _post(port, None).status_code == 401
        assert _post(port, "wrong").status_code == 401
        assert _post(port, TOKEN).json()["accepted"] == 1
    finally:
        _stop(proc)


def test_insecure_no_auth_serves_everyone_and_says_so(tmp_path: Path) -> None:
    port = free_port()
    proc = _receiver(tmp_path, port, "--insecure-no-auth")
    try:
        _wait_ready(proc, port)
        assert _post(port, None).json()["accepted"] == 1
    finally:
        _, err = _stop(proc)
    assert "WARNING" in err
    assert "no authentication" in err


def test_enrol_list_revoke_rotate_from_the_command_line(db_url: str, tmp_path: Path) -> None:
    enrolled = _admin(db_url, "enrol", GW, KEY.public_key)
    assert enrolled.returncode == 0, enrolled.stderr
    token = enrolled.stdout.strip()
    assert len(token) >= 43, "256 random bits"
    assert "shown once" in enrolled.stderr
    again = _admin(db_url, "enrol", GW, KEY.public_key)
    assert again.returncode == 2
    assert "already enrolled" in again.stderr
    bad = _admin(db_url, "enrol", "gw-2", "GNOTAKEY")
    assert bad.returncode == 2
    assert "meter-gateway identity" in bad.stderr
    assert "Traceback" not in bad.stderr + again.stderr
    listed = _admin(db_url, "list")
    assert listed.returncode == 0, listed.stderr
    assert GW in listed.stdout
    assert "active" in listed.stdout
    assert token not in listed.stdout

    port = free_port()
    proc = _receiver(tmp_path, port, db=db_url, enroll=False)
    try:
        _wait_ready(proc, port)
        assert _post(port, token).json()["accepted"] == 1
        assert _admin(db_url, "revoke", GW).returncode == 0
        refused = _post(port, token)
        assert refused.status_code == 403
        assert "revoked" in refused.json()["error"]
        assert "revoked" in _admin(db_url, "list").stdout
        renewed = _admin(db_url, "enrol", GW, KEY.public_key, "--token-out", str(tmp_path / "gw.token"))
        assert renewed.returncode == 0, renewed.stderr
        assert renewed.stdout == ""
        assert (tmp_path / "gw.token").stat().st_mode & 0o777 == 0o600
        new_token = (tmp_path / "gw.token").read_text().strip()
        assert _post(port, token).status_code == 401, "the old token died with the revocation"
        assert _post(port, new_token).json()["replayed"] is True
        rotated = _admin(db_url, "rotate-token", GW)
        assert rotated.returncode == 0, rotated.stderr
        assert _post(port, new_token).status_code == 401
        assert _post(port, rotated.stdout.strip()).status_code == 200
    finally:
        _stop(proc)
