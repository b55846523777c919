"""Technician accounts: names and argon2id password hashes in ``<data_dir>/users.json``.

Why a file of its own and not the ledger: the ledger is billing data with one writer (the daemon),
moved aside and rebuilt after damage (``recover-chains``); accounts must keep working exactly then,
and ``meter-gateway user add`` must be able to run on the box while the daemon owns the ledger. The
file is small, written atomically (temporary file, fsync, rename) under a lock, mode 0600 in the
0700 data dir, and the daemon rereads it when it changes: a user added or removed takes effect at
once, and removing a user or setting a new password ends that user's sessions.

Hashing: argon2id (argon2-cffi) with m = 19 MiB, t = 2, p = 1, the smallest of OWASP's recommended
argon2id settings. Why not more: a Pi Zero 2 has 512 MB for everything and the unit caps the daemon at
256 MiB; one hash costs its memory while it runs (sign-ins are hashed one at a time, see
``gateway.web.login``), and at 64 MiB a verification takes seconds on a Cortex-A53. Online guessing is
bounded by the sign-in throttle, not by the hash; the hash protects a stolen file. Hashes made with
other parameters still verify and are upgraded at the next sign-in.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:  # argon2 (cffi and its library, 0.8 MiB) loads at the first sign-in or password change
    from argon2 import PasswordHasher

from gateway.errors import ConfigError
from gateway.fsync import fsync_dir

log = structlog.get_logger("gateway.web")

USERS_FILE = "users.json"
LOCK_FILE = ".users.lock"
FORMAT_VERSION = 1
MAX_USERS_FILE_BYTES = 1024 * 1024
"""A thousand accounts take under 200 KiB; anything much larger is not this file."""

ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1

USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
MIN_PASSWORD_LEN = 12
"""Long enough that the throttle's few guesses an hour cannot reach it, short enough to type on a phone."""
MAX_PASSWORD_LEN = 1024


class UserError(ConfigError):
    """A user cannot be added, changed or removed as asked (bad usage: exit 2); the message says why."""


class BadUsername(UserError):
    pass


class BadPassword(UserError):
    pass


class UsersFileError(ConfigError):
    """The users file cannot be used (unreadable, damaged, readable by others)."""


def hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_PARALLELISM)


def check_username(name: str) -> str:
    if not USERNAME_RE.fullmatch(name):
        raise BadUsername(f"user name {name[:40]!r} is not allowed: use 1 to 32 lower-case letters, digits, "
                          "'.', '_' or '-', starting with a letter or digit")
    return name


def check_password(name: str, password: str) -> None:
    if len(password) < MIN_PASSWORD_LEN:
        raise BadPassword(f"the password must have at least {MIN_PASSWORD_LEN} characters (a few words are "
                          "easier to type on a phone than symbols)")
    if len(password.encode("utf-8", "surrogateescape")) > MAX_PASSWORD_LEN:
        raise BadPassword(f"the password must be at most {MAX_PASSWORD_LEN} bytes")
    if password.strip().lower() == name:
        raise BadPassword("the password must not be the user name")


def stamp_of(password_hash: str) -> str:
    """Identifies one password of one user (a new password has a new salt, so a new stamp)."""
    return sha256(password_hash.encode("ascii", "replace")).hexdigest()[:32]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class User:
    name: str
    password_hash: str
    created: str
    changed: str

    @property
    def stamp(self) -> str:
        return stamp_of(self.password_hash)


@dataclass(frozen=True)
class _Snapshot:
    key: tuple[int, int, int, int] | None
    users: dict[str, User]
    problem: str | None


class UserStore:
    """The accounts of one box. Reads are cached by the file's identity and reread when it changes."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / USERS_FILE
        self._snapshot = _Snapshot(None, {}, None)
        self._hasher_made: PasswordHasher | None = None
        self._dummy_hash: str | None = None

    @property
    def _hasher(self) -> PasswordHasher:
        if self._hasher_made is None:
            self._hasher_made = hasher()
        return self._hasher_made

    # ---- reading -------------------------------------------------------------------------------

    def users(self) -> dict[str, User]:
        """Current accounts; an unusable file counts as none (``problem`` says why)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._snapshot = _Snapshot(None, {}, None)
            return {}
        except OSError as exc:
            self._snapshot = _Snapshot(None, {}, f"cannot read {self.path}: {exc.strerror}")
            return {}
        key = (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)
        if key != self._snapshot.key:
            try:
                self._snapshot = _Snapshot(key, self._read(), None)
            except UsersFileError as exc:
                if self._snapshot.problem != str(exc):
                    log.error("users_file_unusable", path=str(self.path), error=str(exc))
                self._snapshot = _Snapshot(key, {}, str(exc))
        return self._snapshot.users

    @property
    def problem(self) -> str | None:
        self.users()
        return self._snapshot.problem

    def _read(self) -> dict[str, User]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise UsersFileError(f"cannot read {self.path}: {exc.strerror}; it must be a regular file owned by "
                                 "the gateway's user") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UsersFileError(f"{self.path} is not a regular file")
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077:
                raise UsersFileError(f"{self.path} is readable by other users (mode {mode:o}); run "
                                     f"'chmod 600 {self.path}'")
            raw = os.read(fd, MAX_USERS_FILE_BYTES + 1)
        finally:
            os.close(fd)
        if len(raw) > MAX_USERS_FILE_BYTES:
            raise UsersFileError(f"{self.path} is larger than {MAX_USERS_FILE_BYTES // 1024} KiB")
        return _parse(raw, self.path)

    # ---- checking ------------------------------------------------------------------------------

    def verify(self, name: str, password: str) -> User | None:
        """The user if the password is theirs. Blocking (argon2): call it from a worker thread.

        An unknown name costs one verification as well, so timing does not tell which names exist.
        """
        from argon2.exceptions import InvalidHashError, VerificationError

        user = self.users().get(name) if USERNAME_RE.fullmatch(name) else None
        if user is None:
            with contextlib.suppress(VerificationError, InvalidHashError):
                self._hasher.verify(self._dummy(), password)
            return None
        try:
            self._hasher.verify(user.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        if self._hasher.check_needs_rehash(user.password_hash):
            with contextlib.suppress(UserError, OSError):
                self.set_password(name, password, create=False, replace=True)
                log.info("password_rehashed", user=name)
                return self.users().get(name, user)
        return user

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    # ---- changing ------------------------------------------------------------------------------

    def set_password(self, name: str, password: str, *, create: bool = True, replace: bool = False) -> User:
        """Add ``name`` (``create``) or give it a new password (``replace``); anything else is a UserError."""
        check_username(name)
        check_password(name, password)
        new_hash = self._hasher.hash(password)
        with self._locked():
            users = self._read()
            old = users.get(name)
            if old is not None and not replace:
                raise UserError(f"user {name!r} exists; give --replace to set a new password (this ends the "
                                "user's sessions)")
            if old is None and not create:
                raise UserError(f"no user {name!r}")
            now = _now_iso()
            users[name] = User(name, new_hash, old.created if old else now, now)
            self._write(users)
        return users[name]

    def remove(self, name: str) -> None:
        with self._locked():
            users = self._read()
            if name not in users:
                known = ", ".join(sorted(users)) or "none"
                raise UserError(f"no user {name!r} (users: {known})")
            del users[name]
            self._write(users)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _own_like_dir(self.data_dir / LOCK_FILE, self.data_dir)
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, users: dict[str, User]) -> None:
        doc = {"version": FORMAT_VERSION, "users": {
            u.name: {"hash": u.password_hash, "created": u.created, "changed": u.changed}
            for u in sorted(users.values(), key=lambda u: u.name)}}
        fd, tmp = tempfile.mkstemp(dir=self.data_dir, prefix=f".{USERS_FILE}.")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=1)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            _own_like_dir(Path(tmp), self.data_dir)
            os.replace(tmp, self.path)
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        fsync_dir(self.data_dir)


def _own_like_dir(path: Path, directory: Path) -> None:
    """Run as root (``sudo meter-gateway user add``), a new file would be root's and the daemon, running
    as its own user, could not read it: give it to the data dir's owner."""
    if os.geteuid() != 0:
        return
    st = directory.stat()
    if st.st_uid != 0:
        os.chown(path, st.st_uid, st.st_gid)


def _parse(raw: bytes, path: Path) -> dict[str, User]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise UsersFileError(f"{path} is damaged (not JSON); move it aside and add the users again with "
                             "'meter-gateway user add'") from None
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION or not isinstance(doc.get("users"), dict):
        raise UsersFileError(f"{path} is not a users file of this version (version {FORMAT_VERSION} expected)")
    users: dict[str, User] = {}
    for name, entry in doc["users"].items():
        if not (isinstance(name, str) and USERNAME_RE.fullmatch(name) and isinstance(entry, dict)
                and all(isinstance(entry.get(k), str) for k in ("hash", "created", "changed"))):
            raise UsersFileError(f"{path}: the entry for {str(name)[:40]!r} is damaged; remove it with "
                                 "'meter-gateway user remove' or move the file aside")
        users[name] = User(name, entry["hash"], entry["created"], entry["changed"])
    return users
