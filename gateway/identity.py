"""The gateway's signing identity: an ed25519 key in Stellar format.

Created once, at first start, into a key file readable only by the daemon's
user (0600). The secret never leaves this module: logs, status pages and
errors only ever see the public ``G...`` key.

The key belongs to the data dir's owner, the user the daemon runs as. Run by anybody else (root,
say, with ``sudo meter-gateway identity`` after the install), it never leaves a key behind that the
daemon cannot read: root creates it for the data dir's owner and says so; another user is refused
with the command to use. A key the daemon cannot read is refused with the ``chown`` that fixes it.

A key is only ever replaced on purpose (``meter-gateway identity --new-key``), and
only once its ledger is gone: the old key and the ledger's lineage record are moved
aside (never deleted), so the new key starts new credit chains (see
:mod:`gateway.ledger.lineage`).
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import structlog

from cloud_sync.keys import InvalidSecret, Keypair
from gateway.errors import ConfigError, GatewayError
from gateway.ledger import lineage
from gateway.ledger.faults import translate

log = structlog.get_logger("gateway.identity")

KEY_FILE = "gateway.key"


def key_path(data_dir: Path) -> Path:
    return data_dir / KEY_FILE


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _as_owner(data_dir: Path, owner: int) -> str:
    return (f"run it as {_user(owner)}, the owner of {data_dir} and the user the daemon runs as: "
            f"sudo -u {_user(owner)} meter-gateway identity ...")


def load_or_create(data_dir: Path) -> Keypair:
    path = key_path(data_dir)
    me = os.geteuid()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        info = data_dir.stat()
        if info.st_uid != me and me != 0 and not os.access(path, os.R_OK):
            # Neither may this user read the key there, nor create one: the daemon could not read that one.
            raise ConfigError(f"{data_dir} belongs to {_user(info.st_uid)}, and so does its gateway key; "
                              f"{_user(me)} cannot use it: {_as_owner(data_dir, info.st_uid)}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load(path)
    except PermissionError as exc:
        owner = _owner_of(data_dir)
        if owner is not None and owner != me:
            raise ConfigError(f"cannot use the gateway key in {data_dir} as {_user(me)} ({exc.strerror}): "
                              f"{_as_owner(data_dir, owner)}") from None
        raise translate(exc, path, f"create the gateway key {path}") from None
    except OSError as exc:
        raise translate(exc, path, f"create the gateway key {path}") from None
    keypair = Keypair.random()
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            if info.st_uid != me:  # root, in another user's data dir: the key is that user's
                os.fchown(fh.fileno(), info.st_uid, info.st_gid)
            fh.write(keypair.secret + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)  # never leave a half-written key to be loaded next time
        raise translate(exc, path, f"write the gateway key {path}") from None
    if info.st_uid != me:
        log.warning("gateway_key_created_for_owner", path=str(path), owner=_user(info.st_uid), user=_user(me),
                    detail=f"the key belongs to {_user(info.st_uid)}, who owns {data_dir} (the daemon's user); "
                           f"next time {_as_owner(data_dir, info.st_uid)}")
    return keypair


def _owner_of(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except OSError:
        return None


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
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} is readable by other users (mode {mode:o}); run 'chmod 600 {path}' and start again"
        )
    dir_owner = _owner_of(path.parent)
    try:
        secret = path.read_text(encoding="ascii").strip()
    except PermissionError:
        owner = _user(dir_owner) if dir_owner is not None else _user(os.geteuid())
        raise ConfigError(
            f"cannot read the gateway key {path} as {_user(os.geteuid())}: it belongs to {_user(info.st_uid)} "
            f"(mode {mode:o}); give it to the daemon's user: 'chown {owner}: {path}' (scripts/install.sh "
            "repairs this)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the gateway key {path} ({exc}); move it aside to create a new one") from None
    if dir_owner is not None and info.st_uid != dir_owner:
        log.warning("gateway_key_owner_differs", path=str(path), key_owner=_user(info.st_uid),
                    dir_owner=_user(dir_owner),
                    detail=f"the daemon runs as {_user(dir_owner)} and cannot read a key that belongs to "
                           f"{_user(info.st_uid)}: 'chown {_user(dir_owner)}: {path}' (scripts/install.sh "
                           "repairs this)")
    try:
        return Keypair.from_secret(secret)
    except InvalidSecret:  # its message never echoes the secret
        raise ConfigError(f"{path} does not hold a valid gateway key; move it aside to create a new one") from None
