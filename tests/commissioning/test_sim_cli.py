"""`meter-gateway sim` with three meters, scanned by `meter-gateway scan 1-247`, as an installer would practise."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main

START_S = 30.0
"""Bounds the simulator's start (imports dominate: ~1-5 s on a loaded box)."""
STOP_S = 10.0

CLI = [sys.executable, "-m", "gateway"]
PROFILES = Path(__file__).resolve().parents[2] / "firmware_profiles"


def test_scan_against_sim_reports_exactly_its_three_meters_each_with_its_one_model(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The simulator is a real process; the scan runs in-process through the same CLI entry (one start saved)."""
    sim = subprocess.Popen([*CLI, "sim", "--tcp", "0", "1=eastron-sdm630", "7=eastron-sdm120", "12=abb-b23"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert sim.stdout is not None
        first = sim.stdout.readline()  # blocks until the simulator listens (or dies: then it is empty)
        assert "simulating 3 meter(s) on 127.0.0.1:" in first, sim.stderr.read() if sim.stderr else ""
        port = first.split("127.0.0.1:")[1].split()[0]
        code = main(["scan", "--host", "127.0.0.1", "--tcp-port", port, "--ids", "1-247"])
        scan = capsys.readouterr()
        assert code == 0, scan.err
        rows = [r for r in scan.out.splitlines() if r.startswith("id ")]
        # Each with the channels a meter of its model has: all three map an export register.
        assert rows == ["id   1: eastron-sdm630 (channels: import + export)",
                        "id   7: eastron-sdm120 (channels: import + export)",
                        "id  12: abb-b23 (channels: import + export)"], scan.out
        assert "247/247 ids, 3 found" in scan.err
        # read: the right profile reads clean; one with the word order reversed is doubted, value by value
        line = ["--host", "127.0.0.1", "--tcp-port", port, "--id", "1"]
        assert main(["read", *line, "--profile", "eastron-sdm630"]) == 0
        right = capsys.readouterr()
        assert "warning" not in right.err
        assert float(next(ln for ln in right.out.splitlines() if ln.startswith("frequency")).split()[1]) == 50.0
        swapped = tmp_path / "sdm630-swapped.toml"
        swapped.write_text((PROFILES / "eastron-sdm630.toml").read_text()
                           .replace('id = "eastron-sdm630"', 'id = "sdm630-swapped"')
                           .replace('datatype = "float32"', 'datatype = "float32"\nword_order = "little"'))
        main(["read", *line, "--profile", str(swapped)])
        wrong = capsys.readouterr()
        assert "is sdm630-swapped the right profile" in wrong.err
        assert "warning:   voltage_l1:" in wrong.err
        sim.send_signal(signal.SIGTERM)
        out, err = sim.communicate(timeout=STOP_S)
        assert sim.returncode == 0, err
        assert "simulator stopped" in out
        assert "Traceback" not in err
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()
