"""What a storage failure means, said for the person who must act on it.

SQLite reports every failure as a :class:`sqlite3.Error`; what the gateway should do depends on
which: a full disk or an I/O error is the storage's fault and the same write may succeed later
(retry, prune, alarm), a damaged file must stop the gateway before it writes more into it, and
anything else (a constraint, a value SQLite cannot hold) is about the data being written. This
module turns the third-party error into the gateway's own type at the boundary, with a message
that names the file system and its free space.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from gateway.errors import LedgerDiskFull, LedgerError, LedgerIntegrityError, LedgerStorageError

_FULL = {sqlite3.SQLITE_FULL}
_STORAGE = {sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_BUSY,
            sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_PERM, sqlite3.SQLITE_NOLFS, sqlite3.SQLITE_PROTOCOL}
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_ENOSPC = {errno.ENOSPC, errno.EDQUOT}


def free_mb(path: Path) -> float | None:
    """Free space (for this user) on the file system holding ``path``, or None if it cannot be told."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free / 1_048_576
    except OSError:
        return None


def disk_full_advice(data_dir: Path) -> str:
    free = free_mb(data_dir)
    space = f"{free:.1f} MB free" if free is not None else "free space unknown"
    return (f"the file system holding {data_dir} is full ({space}); free space there (old logs: "
            "'journalctl --vacuum-size=50M', other files), or move data_dir to a bigger card")


DAMAGED_ADVICE = (
    "stop the gateway, move ledger.db (with ledger.db-wal and ledger.db-shm if present) aside, "
    "then continue the meters' credit chains from the billing system ('meter-gateway recover-chains "
    "--config FILE') or enrol a new key ('meter-gateway identity --new-key'); see README, "
    "'Lost or damaged ledger'"
)


def sqlite_code(exc: BaseException) -> int | None:
    """The primary SQLite result code of ``exc`` (extended codes folded), if it is a SQLite error."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_storage_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the storage's fault (full, I/O, damaged), not the data's."""
    if isinstance(exc, OSError):
        return True
    code = sqlite_code(exc)
    return code in _FULL or code in _STORAGE or code in _DAMAGED


def translate(exc: BaseException, path: Path, doing: str) -> LedgerError:
    """The gateway's error for a failure of the ledger at ``path`` while ``doing`` something.

    ``doing`` completes "could not ...", e.g. "commit 40 readings".
    """
    data_dir = path.parent
    code = sqlite_code(exc)
    if code in _FULL or (isinstance(exc, OSError) and exc.errno in _ENOSPC):
        return LedgerDiskFull(f"could not {doing}: {disk_full_advice(data_dir)}")
    if code in _DAMAGED:
        return LedgerIntegrityError(f"could not {doing}: ledger {path} is damaged ({exc}); {DAMAGED_ADVICE}",
                                    finding=f"{exc} (while trying to {doing})")
    if code in _STORAGE or isinstance(exc, OSError):
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return LedgerStorageError(f"could not {doing}: the storage under {data_dir} failed ({why}); check the "
                                  "SD card (dmesg shows I/O errors) and that the file system is not read-only")
    return LedgerError(f"could not {doing} in {path}: {exc}")
