"""The gateway's signing identity: an ed25519 key in Stellar format.

Created once, at first start, into a key file readable only by the daemon's
user (0600). The secret never leaves this module: logs, status pages and
errors only ever see the public ``G...`` key.

A key is only ever replaced on purpose (``meter-gateway identity --new-key``), and
only once its ledger is gone: the old key and the ledger's lineage record are moved
aside (never deleted), so the new key starts new credit chains (see
:mod:`gateway.ledger.lineage`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cloud_sync.keys import Keypair
from gateway.errors import ConfigError, GatewayError
from gateway.ledger import lineage
from gateway.ledger.faults import translate

KEY_FILE = "gateway.key"


def key_path(data_dir: Path) -> Path:
    return data_dir / KEY_FILE


def load_or_create(data_dir: Path) -> Keypair:
    path = key_path(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load(path)
    except OSError as exc:
        raise translate(exc, path, f"create the gateway key {path}") from None
    keypair = Keypair.random()
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(keypair.secret + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)  # never leave a half-written key to be loaded next time
        raise translate(exc, path, f"write the gateway key {path}") from None
    return keypair


def replace_key(data_dir: Path) -> tuple[Keypair, Path | None]:
    """Move the key (and the ledger's lineage record) aside and create a new key.

    Refused while the ledger is there: its chains are signed by the old key, and credits it
    still holds would be continued by the new one. Returns the new key and where the old went.
    """
    ledger = data_dir / lineage.DB_FILE
    if lineage.has_ledger(ledger):
        raise GatewayError(
            f"{ledger} still exists: its credit chains belong to the current key. A new key is for a lost or "
            "damaged ledger: move the ledger (with ledger.db-wal and ledger.db-shm) aside first")
    path = key_path(data_dir)
    moved = None
    try:
        if path.exists():
            moved = lineage.aside_name(path)
            os.replace(path, moved)
        lineage.move_aside(data_dir)
    except OSError as exc:
        raise translate(exc, path, "move the old key aside") from None
    return load_or_create(data_dir), moved


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
