"""A throwaway PostgreSQL server: a temporary directory, a free loopback port, a non-root user.

For the tests, the fleet benchmark and trying the receiver on PostgreSQL without installing a
cluster: it runs Debian's server binaries (``apt-get install postgresql``; any major version)
directly, never the system's cluster, and removes everything on :meth:`PgSandbox.stop`. PostgreSQL
refuses to run as root, so when started by root the server runs as ``nobody``. Not for production.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT_S = 60.0
"""initdb and the first start take a few seconds; a loaded CI box may take several times that."""
STOP_TIMEOUT_S = 30.0
"""A fast shutdown (SIGINT) rolls back open transactions and exits within seconds."""
SANDBOX_USER = "nobody"
"""Who runs the server when root starts it (PostgreSQL will not run as root)."""
ADMIN = "postgres"


class PgUnavailable(Exception):
    """No PostgreSQL server binaries here; the message says how to install them."""


def server_bindir() -> Path:
    """Where ``initdb`` and ``postgres`` are: ``$PG_BINDIR``, Debian's newest ``/usr/lib/postgresql/N/bin``, or PATH."""
    candidates = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    candidates += versions
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise PgUnavailable("PostgreSQL server binaries (initdb, postgres) not found: apt-get install postgresql "
                        "(./scripts/setup.sh --test-services does it), or set PG_BINDIR")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgSandbox:
    """One server; :attr:`url` is its superuser's connection URL (scram-sha-256, a random password)."""

    def __init__(self, *, fsync: bool = True) -> None:
        self.bindir = server_bindir()
        self.fsync = fsync
        self.root = Path(tempfile.mkdtemp(prefix="receiver-pg-"))
        self.password = secrets.token_hex(16)
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._count = 0
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SANDBOX_USER)
            self._ids: tuple[int, int] | None = (entry.pw_uid, entry.pw_gid)
            os.chown(self.root, *self._ids)
        else:
            self._ids = None

    @property
    def server_pid(self) -> int:
        """The postmaster's pid (0 when not running)."""
        return self._proc.pid if self._proc is not None else 0

    @property
    def url(self) -> str:
        return self.url_for(ADMIN)

    def url_for(self, database: str) -> str:
        return f"postgresql://{ADMIN}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *cmd: str, **kwargs: object) -> subprocess.Popen[bytes]:
        extra: dict[str, object] = {}
        if self._ids is not None:
            extra = {"user": self._ids[0], "group": self._ids[1], "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.root)}
        return subprocess.Popen(cmd, cwd=self.root, env=env, **extra, **kwargs)  # type: ignore[call-overload,no-any-return]

    def start(self) -> PgSandbox:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._ids is not None:
            os.chown(pwfile, *self._ids)
        init = self._run(str(self.bindir / "initdb"), "-D", "data", "-U", ADMIN, "--auth=scram-sha-256",
                         f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale", "--no-sync",
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out, _ = init.communicate(timeout=START_TIMEOUT_S)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed in {self.root}: {out.decode(errors='replace')[-2000:]}")
        for _ in range(3):  # a port found free may be taken before the server binds it: try another
            self.port = _free_port()
            if self._start_server():
                return self
        raise RuntimeError(f"the PostgreSQL sandbox could not start: {self.log_tail()}")

    def _start_server(self) -> bool:
        log = (self.root / "server.log").open("ab")
        self._proc = self._run(str(self.bindir / "postgres"), "-D", "data", "-p", str(self.port),
                               "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
                               "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "max_connections=200",
                               "-c", "shared_buffers=256MB", "-c", "log_min_messages=warning",
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                if self.psql("SELECT 1", check=False).returncode == 0:
                    return True
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"PostgreSQL did not accept connections within {START_TIMEOUT_S:.0f} s: {self.log_tail()}")

    def psql(self, sql: str, *, database: str = ADMIN, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-d", self.url_for(database), "-c", sql], capture_output=True, text=True,
                              timeout=START_TIMEOUT_S, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {done.stderr.strip()}")
        return done

    def create_database(self, prefix: str = "receiver") -> str:
        """A new empty database; its URL."""
        self._count += 1
        name = f"{re.sub(r'[^a-z0-9_]', '_', prefix.lower())}_{self._count}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url_for(name)

    def log_tail(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else "(no log)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgSandbox:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
