"""One owner per serial line or TCP endpoint, across processes.

The daemon's bus task holds an exclusive ``flock`` on a small file named after
the line for as long as it runs; ``meter-gateway scan``/``read`` take the same
lock and refuse when they cannot. A second master on an RS-485 line would
collide with the first on the wire (both see CRC errors and blame the meters),
so this is not a nicety. ``flock`` locks die with their process, so a crashed
daemon never leaves a stale lock behind; the PID written into the file is only
there to make the refusal message useful.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path

from gateway.errors import GatewayError

LOCK_DIR_ENV = "METER_GATEWAY_LOCK_DIR"
_SYSTEM_LOCK_DIR = Path("/run/meter-gateway")
"""The systemd unit's RuntimeDirectory: writable for the hardened service (ProtectSystem=strict
leaves /run/lock read-only) and the same path a root shell's scan/read looks at."""


class PortBusy(GatewayError):
    """Another process (normally the running daemon) owns this line."""

    def __init__(self, message: str, holder_pid: int | None) -> None:
        super().__init__(message)
        self.holder_pid = holder_pid


def lock_dir() -> Path:
    """Where lock files live: $METER_GATEWAY_LOCK_DIR, /run/meter-gateway, or a per-user /tmp dir.

    Daemon and CLI must agree on this, so it depends only on the environment
    and on what the system offers, never on a config file.
    """
    env = os.environ.get(LOCK_DIR_ENV)
    if env:
        return Path(env)
    if _SYSTEM_LOCK_DIR.is_dir():
        # The daemon's directory, even when this user cannot write to it: a private fallback would
        # never see the daemon's locks, and a technician's scan would become a second master.
        return _SYSTEM_LOCK_DIR
    for candidate in (_SYSTEM_LOCK_DIR, Path(f"/tmp/meter-gateway-locks-{os.getuid()}")):
        with contextlib.suppress(OSError):
            candidate.mkdir(mode=0o775, parents=True, exist_ok=True)
            if os.access(candidate, os.W_OK):
                return candidate
    raise PortBusy("no writable lock directory; set METER_GATEWAY_LOCK_DIR", None)


def endpoint_key(*, device: str | None = None, host: str | None = None, port: int | None = None) -> str:
    """A file-name-safe key for a line: the device's real path, or host-port.

    The real path makes /dev/serial/by-id/... and /dev/ttyUSB0 the same line.
    """
    if device:
        name = os.path.realpath(device) if os.path.exists(device) else os.path.abspath(device)
        raw = "dev" + name
    else:
        raw = f"tcp-{host}-{port}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)


class PortLock:
    """Exclusive, non-blocking, process-lifetime lock on one line."""

    def __init__(self, key: str, *, owner: str) -> None:
        self.key = key
        self.owner = owner
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return lock_dir() / f"{self.key}.lock"

    def acquire(self) -> None:
        path = self.path
        writable = True
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
        except PermissionError:
            # Another user's lock file (normally the daemon's): flock works on a read-only descriptor.
            writable = False
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise PortBusy(f"cannot create the line lock {path} (permission denied): run as root or as "
                               "a member of the meter-gateway group", None) from None
            except OSError as exc:
                raise PortBusy(f"cannot check the line lock {path} ({exc.strerror}): run as root or as a "
                               "member of the meter-gateway group", None) from None
        except OSError as exc:
            raise PortBusy(f"cannot create the line lock {path} ({exc.strerror}): run as root or as a "
                           "member of the meter-gateway group", None) from None
        if writable:
            # The service's UMask=0077 would leave it private; others must be able to test the lock.
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o664)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = f"process {holder[0]} ({holder[1]})" if holder else "another process"
            raise PortBusy(f"{who} owns this line (lock {path})", holder[0] if holder else None) from None
        except BaseException:
            os.close(fd)
            raise
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {self.owner}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)  # fails harmlessly on a read-only descriptor
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> PortLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> tuple[int, str] | None:
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
        pid, _, owner = text.partition(" ")
        return int(pid), owner
    except (OSError, ValueError):
        return None
