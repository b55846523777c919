"""``meter-gateway run`` whose ledger commits can be wedged from outside, for ``tests/test_watchdog_process.py``.

Run as ``python -m tests.watchdog_child FIFO STALL_S -- run --config FILE``: exactly the CLI's
``main`` (its signal handling, its sd_notify, its exit code), with two changes made before it starts:

* the writer counts as wedged after ``STALL_S`` host seconds instead of minutes;
* while the named pipe ``FIFO`` exists, each commit first opens it for reading in a worker
  thread, as SQLite's thread would sit in a ``write``/``fsync`` on a hung SD card: the open blocks
  in the kernel until the test opens the other end, and the read until it closes it. Nothing else
  of the daemon is touched, so the buses, the page and the watchdog task go on as they would.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import gateway.ledger.writer as writer
from gateway.cli import main
from gateway.intervals import Reading
from gateway.ledger.store import CommitResult, Ledger


def _block_on(fifo: Path) -> None:
    try:
        with fifo.open("rb") as fh:
            fh.read()
    except FileNotFoundError:  # released between the check and the open
        pass


def install_wedge(fifo: Path, stall_s: float) -> None:
    vars(writer)["WRITER_STALL_S"] = stall_s  # read when the daemon makes its writer
    real = Ledger.commit_readings

    async def commit_readings(self: Ledger, readings: Sequence[Reading], *, now_ms: int) -> CommitResult:
        if fifo.exists():
            await asyncio.to_thread(_block_on, fifo)
        return await real(self, readings, now_ms=now_ms)

    Ledger.commit_readings = commit_readings  # type: ignore[method-assign]


if __name__ == "__main__":
    fifo_arg, stall_arg, separator, *cli = sys.argv[1:]
    assert separator == "--", sys.argv
    install_wedge(Path(fifo_arg), float(stall_arg))
    sys.exit(main(cli))
