"""Shared fixtures: real services on loopback, private lock directories."""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from gateway.acquisition.portlock import LOCK_DIR_ENV
from gateway.sim import children

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
BROKER_START_S = 5.0
"""mosquitto listens within milliseconds; this only bounds a broken start on a loaded CI box."""
BROKER_STOP_S = 10.0


@pytest.fixture(autouse=True)
def structlog_as_found() -> Iterator[None]:
    """Each test starts with the logging configuration the session started with.

    A test that runs the CLI in-process configures structlog (level, renderer) for the daemon; a later
    test's ``capture_logs`` then saw only what that level let through. Which test ran before which was
    an accident of order (it showed once the suite ran on two workers)."""
    before = structlog.get_config()
    yield
    structlog.configure(**before)


@pytest.fixture(autouse=True)
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own lock directory, so parallel runs never share line locks."""
    d = tmp_path / "locks"
    d.mkdir()
    monkeypatch.setenv(LOCK_DIR_ENV, str(d))
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Broker:
    """A real mosquitto on a free port; persistent, so a restart keeps sessions and queued messages."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            # user: started as root, mosquitto would drop to "mosquitto", which cannot write tmp_path
            # (and a credential change would cancel its parent-death signal).
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
            f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n"
            "autosave_on_changes true\nmax_queued_messages 10000\n"
        )
        if not Path(MOSQUITTO).exists():
            pytest.fail("mosquitto is required: run ./scripts/setup.sh (apt-get install -y mosquitto)")
        # Dies with the test process, even when that is SIGKILLed (see gateway.sim.children).
        self.proc = children.spawn([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        wait_for_port(self.port, BROKER_START_S)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: mosquitto writes its persistence file on the way out
            try:
                self.proc.wait(timeout=BROKER_STOP_S)
            except subprocess.TimeoutExpired:
                # Seen once under a full-suite load: don't fail a test on a slow broker exit.
                self.proc.kill()
                self.proc.wait(timeout=BROKER_STOP_S)
            self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    workdir = tmp_path / "broker"
    workdir.mkdir()
    broker = Broker(free_port(), workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
