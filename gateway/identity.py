"""The gateway's signing identity: an ed25519 key in Stellar format.

Created once, at first start, into a key file readable only by the daemon's
user (0600). The secret never leaves this module: logs, status pages and
errors only ever see the public ``G...`` key.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from stellar_sdk import Keypair

from gateway.errors import ConfigError

KEY_FILE = "gateway.key"


def key_path(data_dir: Path) -> Path:
    return data_dir / KEY_FILE


def load_or_create(data_dir: Path) -> Keypair:
    path = key_path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load(path)
    keypair = Keypair.random()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(keypair.secret + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return keypair


def load(path: Path) -> Keypair:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} is readable by other users (mode {mode:o}); run 'chmod 600 {path}' and start again"
        )
    secret = path.read_text(encoding="ascii").strip()
    try:
        return Keypair.from_secret(secret)
    except Exception:  # noqa: BLE001 - the SDK raises several types; none may echo the secret
        raise ConfigError(f"{path} does not hold a valid gateway key; move it aside to create a new one") from None
