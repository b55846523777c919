"""Line locks across users: the daemon runs as its service user, a technician's scan as another.

The cross-user cases need root (to run a process as ``nobody``); CI runs as root.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.acquisition import portlock
from gateway.acquisition.portlock import PortBusy, PortLock

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
as_root_only = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs root, setpriv and a system Python to act as another user")

PROBE = """
import sys
from pathlib import Path
from gateway.acquisition import portlock
portlock._SYSTEM_LOCK_DIR = Path(sys.argv[1])
print(portlock.lock_dir())
try:
    portlock.PortLock(sys.argv[2], owner="meter-gateway commissioning").acquire()
except portlock.PortBusy as exc:
    print("busy:", exc)
else:
    print("acquired")
"""


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory another user can reach (pytest's own tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="mg-locks-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_nobody(lock_dir: Path, key: str, *groups: int) -> list[str]:
    # The checkout may sit in a directory only root can read (CI's clone does): give ``nobody`` a copy
    # of the modules the probe needs (they import nothing outside the standard library).
    src = lock_dir.parent / "src"
    for module in ("gateway/__init__.py", "gateway/errors.py", "gateway/acquisition/__init__.py",
                   "gateway/acquisition/portlock.py"):
        (src / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / module, src / module)
    for path in [src, *src.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    group_args = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", *group_args, SYSTEM_PYTHON, "-c", PROBE,
                           str(lock_dir), key], capture_output=True, text=True, env=env, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_a_lock_file_made_under_a_strict_umask_is_still_testable_by_others(lock_dir: Path) -> None:
    old = os.umask(0o077)  # the unit's UMask
    try:
        with PortLock("line", owner="meter-gateway bus a") as lock:
            mode = stat.S_IMODE(os.stat(lock.path).st_mode)
    finally:
        os.umask(old)
    assert mode == 0o664


@as_root_only
@pytest.mark.parametrize("in_group", [True, False])
def test_a_technician_is_refused_while_the_daemon_holds_the_line(shared_tmp: Path, in_group: bool,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = shared_tmp / "run-meter-gateway"  # stands in for /run/meter-gateway (RuntimeDirectoryMode=0775)
    run.mkdir()
    run.chmod(0o775)
    monkeypatch.delenv(portlock.LOCK_DIR_ENV)
    monkeypatch.setattr(portlock, "_SYSTEM_LOCK_DIR", run)
    old = os.umask(0o077)  # the unit's UMask
    try:
        with PortLock("dev_dev_ttyUSB0", owner="meter-gateway bus rs485"):
            out = as_nobody(run, "dev_dev_ttyUSB0", *([os.getegid()] if in_group else []))
    finally:
        os.umask(old)
    assert out[0] == str(run), "the daemon's directory, not a private fallback"
    assert out[1].startswith("busy:"), out
    assert f"process {os.getpid()} (meter-gateway bus rs485)" in out[1]


@as_root_only
def test_a_technician_outside_the_group_gets_a_clear_message_not_a_traceback(shared_tmp: Path) -> None:
    run = shared_tmp / "run-meter-gateway"
    run.mkdir()
    run.chmod(0o755)  # not writable for nobody, and no lock file for this line yet
    out = as_nobody(run, "dev_dev_ttyUSB1")
    assert out[1].startswith("busy: cannot create the line lock"), out
    assert "meter-gateway group" in out[1]


def test_lock_dir_prefers_the_environment(lock_dir: Path) -> None:
    assert portlock.lock_dir() == lock_dir
    with PortLock("x", owner="a"), pytest.raises(PortBusy):
        PortLock("x", owner="b").acquire()
