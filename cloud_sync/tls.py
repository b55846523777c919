"""One TLS client context for every HTTP client in the process (billing API over httpx; Horizon and
Soroban RPC over requests, ``cloud_sync.horizon_http``).

httpx builds a fresh ``SSLContext`` for each client and loads certifi's CA bundle into it: about
1.3 MiB of parsed certificates per client, most of them never used (a gateway talks to one or two
hosts). Here the context is made once and shared, and its trust anchors come, when the system has
them, from the OS's hashed CA directory (``/etc/ssl/certs``, kept by ``ca-certificates`` as on
Raspberry Pi OS and Debian): OpenSSL then reads only the issuer certificates a handshake asks for,
so the bundle is never held in memory. Without such a directory it falls back to certifi's bundle,
as httpx would. ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` are honoured first, as httpx honours them.

Verification is never relaxed: hostname checks and ``CERT_REQUIRED`` are ``create_default_context``'s.
An empty or unhashed directory would fail every handshake (closed, not open), hence the check for at
least one hash link before it is preferred.
"""

from __future__ import annotations

import functools
import os
import ssl
from pathlib import Path


def _hashed_dir(path: str | None) -> str | None:
    """``path`` if it is a directory OpenSSL can look issuers up in (``c_rehash`` links such as ``5ad8a5d6.0``)."""
    if not path or not os.path.isdir(path):
        return None
    try:
        with os.scandir(path) as entries:
            if any(len(e.name) == 10 and e.name[8:] == ".0" for e in entries):
                return path
    except OSError:
        return None
    return None


@functools.cache
def client_context() -> ssl.SSLContext:
    """The process's verifying TLS client context, built at first use (an http-only gateway never parses CAs)."""
    if cafile := os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=cafile)
    if capath := os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=capath)
    paths = ssl.get_default_verify_paths()
    if capath := _hashed_dir(paths.capath) or _hashed_dir(paths.openssl_capath):
        return ssl.create_default_context(capath=capath)
    import certifi  # requests' and httpx's own dependency, and their default

    return ssl.create_default_context(cafile=str(Path(certifi.where())))
