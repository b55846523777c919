"""What the crash and power-cut tests share.

A reference receiver running as its own process (the central billing system,
on another box in the story) that can be SIGKILLed and restarted on the same
database; demo runs (simulated meters + the real gateway daemon) that are
SIGKILLed, each time checking by pid that nothing the demo started survives
it; and the verdict: the receiver holds every credit of the ledger's outbox
exactly once, in verified chains, adding up to each simulated meter's
register delta to the Wh.

The verdict is per (meter, channel): each channel of a meter (import; export
where the meter reads an export register) is a chain of its own, with its own
seqs, so "lost" and "duplicated" are counted per series, every series' chain is
verified on its own, and each channel's credits must add up to that channel's
register (import: the load model's register; export: the model's ``export_wh``, what the
simulator serves as ``energy_export``, or 0 where the simulator has no export model yet; see
:func:`true_register`).
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cloud_sync.credit import ChainTip, channel_of, verify
from gateway.sim import children
from gateway.sim.demo import GATEWAY_ID, MQTT_METER, DemoState, models
from gateway.sim.demo_check import series_report
from tests.conftest import free_port, wait_for_port
from tests.procs import Adopter, Proc

PY = sys.executable
REPO = Path(__file__).resolve().parent.parent
METERS = 5
MAX_TRIMMED = 3
"""Intervals at either end before the first (after the last) boundary the gateway read, not interpolated."""
RECEIVER_START_S = 30.0
"""The receiver imports starlette and uvicorn, about a second; a loaded CI box may take much longer."""
RECEIVER_STOP_S = 10.0
FINAL_RUN_S = 6.0
FINAL_LATE_EVERY = 4
"""Every 4th MQTT message of the final runs is published late (see the demo's --late-mqtt)."""
FINAL_RUNS = 5
FINAL_RUN_TIMEOUT_S = 120.0
POLL_S = 0.002
"""How often a waiting test looks for the moment to strike: a kill lands within a few ms of it."""
IDLE_POLL_S = 0.05
"""How often it looks otherwise (the receiver's chaos, the demo still alive): spares the CPU the demo needs."""


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


class Receiver:
    """``python -m cloud_sync.receiver`` on a fixed port and database, killable and restartable."""

    def __init__(self, folder: Path, key: str, log: IO[str]) -> None:
        self.db = folder / "receiver.db"
        self.token_file = folder / "api.token"
        self.token_file.write_text("crash-test-token\n")
        self.token_file.chmod(0o600)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._key = key
        self._log = log
        self.proc: subprocess.Popen[Any] | None = None
        self.kills = 0

    def start(self, *, wait: bool = True) -> None:
        self.proc = children.spawn(
            [PY, "-m", "cloud_sync.receiver", "--db", str(self.db), "--port", str(self.port),
             "--enroll", f"{GATEWAY_ID}={self._key}", "--token-file", str(self.token_file)],
            stdout=subprocess.DEVNULL, stderr=self._log, cwd=REPO)
        if wait:
            wait_for_port(self.port, RECEIVER_START_S)

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.kills += 1

    def ensure_up(self) -> None:
        if not self.up:
            self.start()
        wait_for_port(self.port, RECEIVER_START_S)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=RECEIVER_STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@dataclass
class ReceiverChaos:
    """Kills the receiver at random moments and restarts it after a random pause.

    Driven by :meth:`tick` from the test's main thread: children must be started
    from the thread that outlives them (see gateway.sim.children).
    """

    receiver: Receiver
    rng: random.Random
    up_s: tuple[float, float] = (2.0, 6.0)
    down_s: tuple[float, float] = (0.05, 1.0)
    _next: float = 0.0

    def __post_init__(self) -> None:
        self._next = time.monotonic() + self.rng.uniform(*self.up_s)

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        if self.receiver.up:
            self.receiver.kill()
            self._next = now + self.rng.uniform(*self.down_s)
        else:
            self.receiver.start(wait=False)
            self._next = now + self.rng.uniform(*self.up_s)


@dataclass
class Rig:
    """One gateway data dir, one receiver, and the demo runs against them."""

    tmp: Path
    data: Path
    speed: str = "900"
    log_path: Path = field(init=False)
    log: IO[str] = field(init=False)
    key: str = field(init=False)
    receiver: Receiver = field(init=False)
    orphans: list[Proc] = field(default_factory=list)
    children_seen: int = 0
    """Processes the killed demos left behind (each then died by itself, or is in ``orphans``)."""
    kills: int = 0
    ours: set[int] = field(default_factory=set)
    """Pids of long-lived helpers the test itself started (a FUSE server): not the demo's."""
    adopter: Adopter = field(default_factory=Adopter)

    def __post_init__(self) -> None:
        self.adopter.__enter__()
        self.log_path = self.tmp / "gateway.log"
        self.log = self.log_path.open("a")
        done = children.run([PY, "-m", "gateway", "identity", "--data-dir", str(self.data)], capture_output=True,
                            text=True, timeout=FINAL_RUN_TIMEOUT_S, check=True, cwd=REPO)
        self.key = done.stdout.strip()
        self.receiver = Receiver(self.tmp, self.key, self.log)

    def close(self) -> None:
        self.receiver.stop()
        self.log.close()
        self.adopter.__exit__()

    def demo_argv(self, *extra: str) -> list[str]:
        return [PY, "-m", "gateway", "demo", "--speed", self.speed, "--web-port", "0", "--data-dir", str(self.data),
                "--receiver", self.receiver.url, "--receiver-token-file", str(self.receiver.token_file),
                "--log-level", "info", "--no-stellar", *extra]  # Stellar's own kills: tests/test_stellar_crash.py

    def log_tail(self, n: int = 4000) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def start_demo(self, *extra: str) -> tuple[subprocess.Popen[Any], int]:
        """A demo run and the offset in the shared log where its lines begin."""
        self.log.flush()
        offset = self.log_path.stat().st_size
        return children.spawn(self.demo_argv(*extra), stdout=subprocess.DEVNULL, stderr=self.log, cwd=REPO), offset

    def wait(self, demo: subprocess.Popen[Any], seconds: float, *, until: Callable[[], bool] | None = None,
             chaos: ReceiverChaos | None = None, allow_exit: bool = False) -> bool:
        """Let the demo run up to ``seconds``; True as soon as ``until`` holds (then strike at once).

        ``allow_exit``: the demo may die by itself meanwhile (its storage was cut under it).
        """
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until is not None and until():
                return True
            if demo.poll() is not None and not allow_exit:
                raise AssertionError(f"the demo exited by itself ({demo.returncode}):\n{self.log_tail()}")
            if chaos is not None:
                chaos.tick()
            time.sleep(POLL_S if until is not None else IDLE_POLL_S)
        return False

    def kill(self, demo: subprocess.Popen[Any], *, cut: Callable[[], None] | None = None) -> None:
        """SIGKILL the demo itself (not its process group); nothing it started may outlive it.

        ``cut``, if given, runs right after the kill: the power cut of the box's storage.
        """
        demo.kill()
        if cut is not None:
            cut()
        demo.wait()
        self.kills += 1
        ours = set(self.ours)
        if self.receiver.proc is not None:
            ours.add(self.receiver.proc.pid)
        adopted, left = self.adopter.collect(ours)
        self.children_seen += adopted
        self.orphans += left

    def final_run(self) -> int:
        """Clean runs to the end, with the receiver up, until the outbox is delivered; returns how many.

        Each must exit 0. More than one is needed when the kills left a backlog larger than one
        run drains: the invariant is about loss and duplication, not about speed.
        """
        self.receiver.ensure_up()
        for runs in range(1, FINAL_RUNS + 1):
            # Late MQTT messages here too: a 6-s run surely publishes some (a killed run often dies first).
            done = children.run(self.demo_argv("--duration", str(FINAL_RUN_S), "--late-mqtt", str(FINAL_LATE_EVERY)),
                                stdout=subprocess.DEVNULL,
                                stderr=self.log, timeout=FINAL_RUN_TIMEOUT_S, cwd=REPO)
            assert done.returncode == 0, self.log_tail()
            if set(outbox(self.data)) <= {(m, c, s) for m, c, s, _, _ in received(self.receiver.db)}:
                return runs
        return FINAL_RUNS

    def log_lines(self, offset: int = 0) -> list[dict[str, Any]]:
        """The demo's JSON log events from ``offset`` on (other lines, e.g. tracebacks, are skipped)."""
        self.log.flush()
        with self.log_path.open("rb") as fh:
            fh.seek(offset)
            raw = fh.read().decode(errors="replace")
        events = []
        for line in raw.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    events.append(json.loads(line))
        return events

    def logged(self, offset: int, event: str) -> bool:
        self.log.flush()
        with self.log_path.open("rb") as fh:
            fh.seek(offset)
            return f'"event": "{event}"'.encode() in fh.read()


# ---- the verdict ----------------------------------------------------------------------------


Key = tuple[str, str, int]
"""(meter, channel, seq): one credit of one series."""


def _has_channels(db: sqlite3.Connection) -> bool:
    """A ledger from before channels (the upgrade tests start from one) holds import credits only."""
    return any(row[1] == "channel" for row in db.execute("PRAGMA table_info(credits)"))


def outbox(data: Path) -> dict[Key, str]:
    """The ledger's credits by (meter, channel, seq); none if the ledger (or its schema) is gone."""
    if not (data / "ledger.db").exists():
        return {}
    with contextlib.closing(_ro(data / "ledger.db")) as db:
        try:
            channel = "channel" if _has_channels(db) else "'import'"
            return {(m, c, s): h for m, c, s, h in db.execute(f"SELECT meter, {channel}, seq, hash FROM credits")}
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return {}
            raise


def received(receiver_db: Path) -> list[tuple[str, str, int, str, str]]:
    """The receiver's credits as (meter, channel, seq, hash, wire), each series in seq order."""
    with contextlib.closing(_ro(receiver_db)) as db:
        return [tuple(r) for r in db.execute(
            "SELECT meter, channel, seq, hash, wire FROM credits ORDER BY meter, channel, seq")]


def assert_receiver_within_ledger(data: Path, receiver_db: Path) -> int:
    """Everything that reached the receiver is still in the ledger, unchanged: nothing sent was lost."""
    if not receiver_db.exists():
        return 0
    held = {(m, c, s): h for m, c, s, h, _ in received(receiver_db)}
    box = outbox(data)
    lost = sorted(k for k in held if k not in box)
    changed = sorted(k for k in held if k in box and box[k] != held[k])
    assert not lost, f"credits the receiver holds are gone from the ledger: {lost[:5]} ({len(lost)})"
    assert not changed, f"credits the receiver holds were changed in the ledger: {changed[:5]} ({len(changed)})"
    return len(held)


@dataclass(frozen=True)
class Verdict:
    credits: int
    corrections: int
    tips: dict[str, int]
    """Each meter's import chain tip (seq)."""
    series: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    """Per (meter, channel): credits held, lost (in the ledger, not at the receiver), duplicated
    (the same seq more than once, or a credit the ledger does not hold), corrections, net Wh."""


def true_register(meter: str, channel: str, epoch: float) -> Callable[[float], int]:
    """The simulated meter's true register of ``channel`` at a time (what its register would read)."""
    model = models(epoch)[meter]
    if channel == "import":
        return model.register_wh
    # TODO(channels): the demo's simulated meters serve energy_export = 0 (gateway/sim/modbus_sim.py); a model
    # with panels (the demo's solar house) gives its own export register, used here once it has one.
    exported: Callable[[float], int] | None = getattr(model, "export_wh", None)
    return exported if exported is not None else (lambda t: 0)


def conservation(credits: list[dict[str, Any]], register: Callable[[float], int]) -> dict[str, Any]:
    """One series' credits against its true register: the demo's own per-series check."""
    return series_report(credits, register)


def assert_exact(data: Path, receiver_db: Path, key: str) -> Verdict:
    """The receiver holds exactly the outbox, once each, in chains that verify, conserving energy exactly.

    All of it per (meter, channel): 0 lost and 0 duplicated in every series.
    """
    rows = received(receiver_db)
    box = outbox(data)
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for meter, channel, _ in box:
        counts.setdefault((meter, channel), {"credits": 0, "lost": 0, "duplicated": 0, "corrections": 0})
    seen: set[Key] = set()
    for meter, channel, seq, digest, _ in rows:
        c = counts.setdefault((meter, channel), {"credits": 0, "lost": 0, "duplicated": 0, "corrections": 0})
        c["credits"] += 1
        if (meter, channel, seq) in seen or box.get((meter, channel, seq)) != digest:
            c["duplicated"] += 1
        seen.add((meter, channel, seq))
    for meter, channel, seq in box:
        if (meter, channel, seq) not in seen:
            counts[meter, channel]["lost"] += 1
    bad = {k: v for k, v in counts.items() if v["lost"] or v["duplicated"]}
    assert not bad, f"per (meter, channel), 0 lost and 0 duplicated: {bad}"
    held = {(m, c, s): h for m, c, s, h, _ in rows}
    assert held == box, "the receiver holds exactly the outbox: nothing lost, nothing extra"
    tips: dict[tuple[str, str], ChainTip] = {}
    by_series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for meter, channel, _seq, _, wire in rows:
        body, digest = verify(json.loads(wire), expected_key=key, tip=tips.get((meter, channel)))
        assert (body["meter"], channel_of(body)) == (meter, channel), "stored under its own series"
        tips[meter, channel] = ChainTip(body["seq"], digest)
        by_series.setdefault((meter, channel), []).append(body)
    assert sorted({m for m, c in tips if c == "import"}) == sorted(models(0)), sorted(tips)
    assert len({m for m, _ in tips}) == METERS, sorted(tips)
    epoch = DemoState.load_or_create(data, 0).epoch
    for (meter, channel), credits in by_series.items():
        r = conservation(credits, true_register(meter, channel, epoch))
        name = f"{meter} {channel}"
        assert r["contiguous"], name
        assert r["gapless"], f"{name}: the intervals leave a hole in time"
        assert r["exact"], f"{name}: {r['credited_wh']} Wh credited, register moved {r['register_delta_wh']} Wh"
        assert max(r["trimmed"]) <= MAX_TRIMMED, f"{name}: too many intervals outside read boundaries {r}"
        counts[meter, channel]["corrections"] = r["corrections"]
        counts[meter, channel]["wh"] = sum(c["wh"] for c in credits)
    return Verdict(len(rows), sum(c["corrections"] for c in counts.values()),
                   {m: t.seq for (m, c), t in tips.items() if c == "import"}, counts)


def late_arrivals(rig: Rig) -> dict[str, int]:
    """What became of the MQTT meter's late messages: refused at the source, or placed by the ledger."""
    # Refused at the source (payload_rejected) or by the ledger (reading_not_used, logged once per
    # streak of refusals: this counts at least one per streak, a lower bound of the refusals).
    refused = sum(1 for e in rig.log_lines() if e.get("event") in ("payload_rejected", "reading_not_used")
                  and e.get("meter") == MQTT_METER and e.get("reason") == "out_of_order")
    with contextlib.closing(_ro(rig.data / "ledger.db")) as db:
        (placed,) = db.execute("SELECT COUNT(*) FROM readings WHERE meter=? AND disposition='late'",
                               (MQTT_METER,)).fetchone()
    return {"refused_out_of_order": refused, "placed_late": int(placed)}
