"""Power cuts: the gateway's storage loses everything that was not fsynced, many times.

SIGKILL (tests/test_crash.py) loses a process, never a write: the kernel still
holds every write the process made. Here the gateway's data dir lives on a FUSE
file system (tests/powercut_fs.py) that keeps what was not fsynced in memory
only; at a random moment the gateway is killed *and* the storage's power is cut:

* ``lose``: every write and namespace change since the last fsync is gone;
* ``torn``: an arbitrary part of them reached the medium (each dirty 512-byte
  sector with probability 1/2, so multi-sector writes tear; a random prefix of
  the namespace journal).

See tests/powercut_fs.py for exactly what is and is not simulated. The receiver
(the central system, on another box) is not cut. After every cut: the ledger
passes SQLite's integrity check and everything the receiver holds is still in it,
unchanged. At the end: the receiver holds exactly the outbox, once each, chains
verify, and credited energy equals each meter's register delta to the Wh.

``POWER_CUTS`` (default 8) sets the number of cuts.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.sim import children
from tests.crash_rig import PY, REPO, Rig, assert_exact, assert_receiver_within_ledger

CUTS = int(os.environ.get("POWER_CUTS", "8"))
RUN_S = (0.0, 2.5)
"""Wall seconds a run lives once its daemon has opened its ledger."""
START_WAIT_S = 60.0
MOUNT_WAIT_S = 15.0
"""The file system server imports mfusepy and mounts; seconds even on a loaded CI box."""
CUT_WAIT_S = 15.0
CUT_KINDS = ("lose", "torn", "ledger.db-wal", "ledger.db")
"""Random cuts losing all or part of what was pending; cuts in the middle of a transaction (the
WAL being written) and of a checkpoint (the database file being written: the one a stopping
gateway makes as it closes its ledger, so the power goes while it shuts down)."""
ARMED_WRITES = 6
ARMED_WAIT_S = 10.0
"""How long an armed cut may wait for its write (a checkpoint comes every few seconds at 900x)."""
MNT_DETACH = 2


def _fuse_missing() -> str | None:
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse on this machine"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: the library is there, libfuse is not
        return f"mfusepy or libfuse is missing ({exc}): apt-get install fuse3; pip install -e '.[dev]'"
    if os.geteuid() != 0:
        return "mounting the power-cut file system needs root"
    return None


@pytest.fixture(autouse=True)
def _needs_fuse() -> None:
    if (why := _fuse_missing()) is not None:
        if os.environ.get("CI") or os.environ.get("METER_GATEWAY_TEST_SERVICES") == "required":
            pytest.fail(f"the power-cut test must run in CI: {why}")
        pytest.skip(why)


class PowerBox:
    """The box's storage: BACKING is what is durable, MOUNT what the gateway sees."""

    def __init__(self, folder: Path) -> None:
        self.backing = folder / "durable"
        self.mount_point = folder / "box"
        self.backing.mkdir()
        self.mount_point.mkdir()
        self.proc: subprocess.Popen[str] | None = None
        self.mounts = 0
        self.reports: list[dict[str, Any]] = []
        self._stderr = (folder / "powercut_fs.log").open("a")

    def mount(self) -> None:
        self.proc = children.spawn([PY, "-m", "tests.powercut_fs", str(self.backing), str(self.mount_point),
                                    "--seed", str(self.mounts)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=self._stderr, text=True, cwd=REPO)
        self.mounts += 1
        deadline = time.monotonic() + MOUNT_WAIT_S
        while not os.path.ismount(self.mount_point):
            assert self.proc.poll() is None, f"the power-cut file system did not start ({self.proc.returncode})"
            assert time.monotonic() < deadline, "the power-cut file system did not mount"
            time.sleep(0.01)

    def arm(self, mode: str, name: str, writes: int) -> None:
        """Cut the power right after the ``writes``-th write from now to a file called ``name``."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"arm {mode} {name} {writes}\n")
        self.proc.stdin.flush()

    @property
    def out(self) -> bool:
        """The power is already off (an armed cut went off)."""
        return self.proc is None or self.proc.poll() is not None

    def cut(self, mode: str) -> None:
        """Cut the power (unless an armed cut did already): keep what ``mode`` lets survive; unmount."""
        assert self.proc is not None
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        if not self.out:
            with contextlib.suppress(BrokenPipeError):  # an armed cut went off just now
                self.proc.stdin.write(f"cut {mode}\n")
                self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        self.proc.wait(timeout=CUT_WAIT_S)
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc = None
        self.reports.append(json.loads(line))
        self.unmount()

    def unmount(self) -> None:
        # Whether or not it looks mounted: a dead FUSE mount fails every stat (os.path.ismount: False).
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.umount2(str(self.mount_point).encode(), MNT_DETACH) != 0 and ctypes.get_errno() != errno.EINVAL:
            raise OSError(ctypes.get_errno(), f"umount {self.mount_point}")

    def close(self) -> None:
        if self.proc is not None:
            self.cut("lose")
        self.unmount()
        self._stderr.close()


@contextlib.contextmanager
def _box(tmp_path: Path) -> Iterator[PowerBox]:
    box = PowerBox(tmp_path)
    box.mount()
    try:
        yield box
    finally:
        box.close()


def _integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


SQLITE_WRITER = """
import sqlite3, sys, time
for name, sync in (("full.db", "FULL"), ("off.db", "OFF")):
    db = sqlite3.connect(sys.argv[1] + "/" + name, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=" + sync)
    db.execute("CREATE TABLE t (x)")
    for i in range(50):
        db.execute("INSERT INTO t VALUES (?)", (i,))
print("committed", flush=True)
time.sleep(60)
"""


def _rows(path: Path) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM t").fetchone()[0])
        except sqlite3.DatabaseError:
            return 0


def test_the_file_system_loses_what_was_not_fsynced(tmp_path: Path) -> None:
    """The harness itself: unsynced data and names go, fsynced ones stay; SQLite without fsync loses commits."""
    with _box(tmp_path) as box:
        mnt = box.mount_point
        with (mnt / "synced").open("w") as fh:
            fh.write("kept")
            fh.flush()
            os.fsync(fh.fileno())
        (mnt / "unsynced").write_text("gone")
        (mnt / "rewritten").write_text("a longer first version")
        (mnt / "rewritten").write_text("short")
        assert (mnt / "rewritten").read_text() == "short", "O_TRUNC truncates"
        with (mnt / "synced").open("a") as fh:
            fh.write(" and this is not")
        box.cut("lose")
        box.mount()
        assert (mnt / "synced").read_text() == "kept"
        assert not (mnt / "unsynced").exists(), "a file created after the last fsync is gone"

        with children.spawn([PY, "-c", SQLITE_WRITER, str(mnt)], stdout=subprocess.PIPE, text=True) as writer:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "committed"
            writer.kill()
            box.cut("lose")
        box.mount()
        assert _rows(mnt / "full.db") == 50, "synchronous=FULL: every commit survives"
        assert _rows(mnt / "off.db") < 50, "synchronous=OFF never fsyncs: its commits must be lost"


def test_power_cuts_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    rng = random.Random(20261201)
    with _box(tmp_path) as box:
        rig = Rig(tmp_path, box.mount_point / "gateway")
        try:
            rig.receiver.start()
            checked = 0
            struck: dict[str, int] = {}
            for i in range(CUTS):
                rig.ours = {box.proc.pid} if box.proc else set()
                kind = CUT_KINDS[i % len(CUT_KINDS)]
                extra = ["--late-mqtt", "4"] + (["--min-free-mb", "1000000"] if i % 3 == 2 else [])
                demo, offset = rig.start_demo(*extra)
                assert rig.wait(demo, START_WAIT_S, until=lambda o=offset: rig.logged(o, "gateway_starting")), \
                    rig.log_tail()
                if kind in ("lose", "torn"):
                    rig.wait(demo, rng.uniform(*RUN_S))
                else:
                    rig.wait(demo, rng.uniform(*RUN_S))
                    box.arm("torn", kind, rng.randint(1, ARMED_WRITES))
                    if kind == "ledger.db":
                        demo.send_signal(signal.SIGTERM)  # its last checkpoint, when the ledger closes
                    if rig.wait(demo, ARMED_WAIT_S, until=lambda: box.out, allow_exit=True):
                        struck[kind] = struck.get(kind, 0) + 1
                rig.kill(demo, cut=lambda k=kind: box.cut("lose" if k == "lose" else "torn"))
                box.mount()
                assert _integrity(rig.data / "ledger.db") == "ok", f"cut {i}: {box.reports[-1]}"
                checked = max(checked, assert_receiver_within_ledger(rig.data, rig.receiver.db))
            rig.ours = {box.proc.pid} if box.proc else set()
            rig.final_run()
            verdict = assert_exact(rig.data, rig.receiver.db, rig.key)
        finally:
            rig.close()
    lost = sum(r["sectors_dirty"] - r["sectors_kept"] for r in box.reports)
    print(f"\npower cuts: {len(box.reports)}, struck mid-write {struck}; unsynced sectors dropped {lost}; "
          f"per cut {box.reports}; "
          f"{verdict.credits} credits, receiver held up to {checked} between cuts")
    assert rig.orphans == [], f"processes outlived the demo that started them: {rig.orphans}"
    assert lost > 0, "the cuts really dropped unsynced writes"
    assert struck.get("ledger.db-wal", 0) >= 1, "a cut landed in the middle of a transaction"
    assert struck.get("ledger.db", 0) >= 1, "a cut landed in the middle of a checkpoint"
    assert checked > 0, "credits had reached the receiver before some cut"
    assert all(seq >= 10 for seq in verdict.tips.values()), "the cuts left time to make progress"
