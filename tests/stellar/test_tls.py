"""The shared TLS client context (cloud_sync.tls): it verifies against the CAs it names and refuses others.

Each case runs in a child process (the context is built once per process, from the environment), against a
real TLS server on loopback whose certificate is signed by a CA made here with the openssl CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_sync.tls import _hashed_dir

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
TIMEOUT_S = 60.0
"""Bound on a child (imports, one handshake); only catches a hang on a loaded box."""

CHILD = """
import asyncio, ssl, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from cloud_sync.horizon_http import ThreadedRequestsClient
from cloud_sync.tls import client_context
from stellar_sdk.exceptions import ConnectionError as SdkConnectionError

class Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Ok)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = ctx.wrap_socket(server.socket, server_side=True)
threading.Thread(target=server.serve_forever, daemon=True).start()

async def main():
    client = ThreadedRequestsClient()
    try:
        resp = await client.get(f"https://127.0.0.1:{server.server_address[1]}/")
        print("status", resp.status_code)
    except SdkConnectionError as exc:
        print("refused", type(exc.__cause__).__name__)
    finally:
        await client.close()
    print("shared", client_context() is client_context(), client_context().verify_mode == ssl.CERT_REQUIRED)

asyncio.run(main())
"""


def _openssl(cwd: Path, *args: str) -> None:
    if not Path(OPENSSL).exists():
        pytest.fail("the openssl CLI is required for the TLS tests: apt-get install -y openssl")
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=TIMEOUT_S)


def _pki(cwd: Path) -> None:
    """Two CAs (``ca``, ``other``) and a server certificate for 127.0.0.1 signed by ``ca``."""
    for name in ("ca", "other"):
        _openssl(cwd, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}", "-days", "2")
    (cwd / "srv.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n", encoding="ascii")
    _openssl(cwd, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=srv")
    _openssl(cwd, "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "srv.pem", "-days", "2", "-extfile", "srv.ext")


def _hashed(cwd: Path, ca: str) -> Path:
    """A directory holding ``ca`` under its OpenSSL subject-hash name, as ``ca-certificates`` leaves them."""
    out = subprocess.run([OPENSSL, "x509", "-hash", "-noout", "-in", f"{ca}.pem"], cwd=cwd, check=True,
                         capture_output=True, text=True, timeout=TIMEOUT_S).stdout.strip()
    directory = cwd / f"dir-{ca}"
    directory.mkdir()
    shutil.copy(cwd / f"{ca}.pem", directory / f"{out}.0")
    return directory


def _child(cwd: Path, **env: str) -> str:
    child_env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")} | env
    return subprocess.run([sys.executable, "-c", CHILD, str(cwd / "srv.pem"), str(cwd / "srv.key")], env=child_env,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=True).stdout


def test_a_hashed_ca_directory_verifies_its_servers_and_refuses_others(tmp_path: Path) -> None:
    _pki(tmp_path)
    good, other = _hashed(tmp_path, "ca"), _hashed(tmp_path, "other")
    assert _hashed_dir(str(good)) == str(good)
    assert _child(tmp_path, SSL_CERT_DIR=str(good)).split("\n")[:2] == ["status 200", "shared True True"]
    assert _child(tmp_path, SSL_CERT_DIR=str(other)).startswith("refused SSLError")


def test_ssl_cert_file_is_honoured_as_httpx_honours_it(tmp_path: Path) -> None:
    _pki(tmp_path)
    assert _child(tmp_path, SSL_CERT_FILE=str(tmp_path / "ca.pem")).startswith("status 200")
    assert _child(tmp_path, SSL_CERT_FILE=str(tmp_path / "other.pem")).startswith("refused SSLError")


def test_a_directory_without_hash_links_is_not_taken_for_a_trust_store(tmp_path: Path) -> None:
    """An empty or unhashed directory would fail every handshake: certifi's bundle is used instead."""
    (tmp_path / "ca.pem").write_text("not a hash link\n", encoding="ascii")
    assert _hashed_dir(str(tmp_path)) is None
    assert _hashed_dir(str(tmp_path / "missing")) is None
    assert _hashed_dir(None) is None


def test_the_default_context_holds_no_parsed_bundle_where_the_system_has_a_hashed_directory() -> None:
    """The memory point of cloud_sync.tls (issue 11): with the OS's hashed CA directory, no CA is in memory before
    a handshake asks for its issuer; without one, certifi's bundle is loaded (well over a hundred CAs)."""
    code = ("import json, ssl\nfrom cloud_sync.tls import _hashed_dir, client_context\n"
            "paths = ssl.get_default_verify_paths()\n"
            "print(json.dumps([bool(_hashed_dir(paths.capath) or _hashed_dir(paths.openssl_capath)), "
            "client_context().cert_store_stats()['x509_ca']]))")
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                         check=True).stdout
    hashed, loaded = json.loads(out)
    assert loaded == 0 if hashed else loaded > 100
