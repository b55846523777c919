"""What the shared harness's wire lets any t3.5-honouring master reach: its delivery lateness, measured.

One command: ``.venv/bin/python benchmarks/bridge_latency.py`` (``--bridge`` if the harness is elsewhere)

The shared harness (``../shared/anchors/tb_gateway/``) paces bytes on a simulated 9600-baud wire
(``wire_bridge.py``) and logs each frame at the time it occupies that wire; the bytes of a frame
are handed to the other side by an asyncio timer when the frame's wire time ends, and such a timer
fires late (epoll's millisecond granularity). A master that times its t3.5 silence from the last
byte it has *received*, as the Modbus rules require and as this gateway does, therefore leaves
t3.5 plus that lateness on the bridge's wire after every answer: the harness counts the lateness
against the master.

Measured here, in the same run: the bridge started as the harness starts it, a slave that answers
every request at once, and a master that blocks in ``select`` (the quickest a reader can be) and
stamps the moment the answer's last byte arrives. Lateness = that moment - the answer's wire end in
the bridge's log (both on the wall clock). Printed: the lateness's median and spread, and the
scheduling-efficiency ceiling it leaves the harness's six-quantity plan (16 meters x three requests
of 8, 2 and 6 registers): ideal wire time / (ideal wire time + 48 x median lateness).
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without the editable install too

from gateway.acquisition import rtu
from gateway.acquisition.read_plan import WireCost

DEFAULT_BRIDGE = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "tb_gateway" / "wire_bridge.py"
BAUD, BITS = 9600, 10
"""The harness's wire: 9600 baud, 8N1."""
PLAN = (8, 2, 6)
"""Registers per request of the harness's six-quantity plan, per meter (0x00-07, 0x34-35, 0x46-4B)."""
METERS = 16
WARMUP = 20
"""Transactions left out of the figures: the bridge's and the ptys' first ones are slower."""
REPLY_WAIT_S = 1.0
"""An answer takes about 25 ms on this wire; a second means the bridge has gone."""


def _answer(count: int) -> bytes:
    return rtu.with_crc(bytes([1, 4, 2 * count]) + bytes(2 * count))


def measure(bridge: Path, transactions: int) -> list[float]:
    """Seconds from each answer's wire end (the bridge's log) to its last byte's arrival at the master."""
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        slave_link, master_link, wire_log = Path(tmp) / "slave", Path(tmp) / "master", Path(tmp) / "wire.log"
        proc = subprocess.Popen([sys.executable, str(bridge), str(slave_link), str(master_link), str(wire_log),
                                 str(BAUD), str(BITS)], stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            proc.stdout.readline()  # the bridge says when its ptys are linked
            slave = os.open(slave_link, os.O_RDWR | os.O_NOCTTY)
            master = os.open(master_link, os.O_RDWR | os.O_NOCTTY)
            tty.setraw(slave)
            tty.setraw(master)
            request, answer = rtu.read_request(1, 4, 0, 8), _answer(8)
            stop = threading.Event()

            def answer_every_request() -> None:
                seen = 0
                while not stop.is_set():
                    if not select.select([slave], [], [], 0.1)[0]:
                        continue
                    seen += len(os.read(slave, 256))
                    while seen >= len(request):
                        seen -= len(request)
                        os.write(slave, answer)

            slave_thread = threading.Thread(target=answer_every_request, daemon=True)
            slave_thread.start()
            arrivals: list[float] = []
            for _ in range(transactions):
                os.write(master, request)
                got = 0
                while got < len(answer):
                    if not select.select([master], [], [], REPLY_WAIT_S)[0]:
                        raise SystemExit("the bridge stopped answering: is it the harness's wire_bridge.py?")
                    got += len(os.read(master, 256))
                arrivals.append(time.time())
                time.sleep(0.006)  # past t3.5, so each request starts its own frame on the wire
            stop.set()
            slave_thread.join()
            os.close(master)
            os.close(slave)
        finally:
            proc.terminate()
            proc.wait()
        tc = BITS / BAUD
        ends = [float(p[0]) + int(p[6]) * tc for p in (line.split() for line in wire_log.read_text().splitlines())
                if len(p) == 7 and p[1] == "rsp"]
    if len(ends) != len(arrivals):
        raise SystemExit(f"the bridge logged {len(ends)} answers for {len(arrivals)} transactions")
    return [a - e for a, e in zip(arrivals, ends, strict=True)][WARMUP:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bridge", type=Path, default=DEFAULT_BRIDGE, help="the harness's wire_bridge.py")
    parser.add_argument("--transactions", type=int, default=400, help="transactions measured (default 400)")
    args = parser.parse_args(argv)
    if not args.bridge.is_file():
        parser.error(f"{args.bridge} not found: pass --bridge with the shared harness's wire_bridge.py")
    if args.transactions <= WARMUP:
        parser.error(f"--transactions must be more than {WARMUP}")

    late = sorted(measure(args.bridge, args.transactions))
    cost = WireCost(bits_per_char=BITS, baud=BAUD)
    ideal = METERS * sum(cost.transaction_time(n) for n in PLAN)
    turns = METERS * len(PLAN)
    median_s = statistics.median(late)
    print(f"wire: {args.bridge} at {BAUD} baud {BITS} bits/char, t3.5 = {cost.t35() * 1e3:.3f} ms; "
          f"{len(late)} transactions")
    print(f"answer handed over after its wire end: median {median_s * 1e3:.3f} ms, "
          f"p10 {late[len(late) // 10] * 1e3:.3f}, p90 {late[9 * len(late) // 10] * 1e3:.3f}")
    print(f"silence after an answer, floor for a master timing t3.5 from the last byte it received: "
          f"{(cost.t35() + median_s) * 1e3:.2f} ms (t3.5 + lateness)")
    print(f"harness plan ({METERS} meters x requests of {'/'.join(map(str, PLAN))} registers): wire ideal "
          f"{ideal:.3f} s per cycle; best cycle such a master can reach {ideal + turns * median_s:.3f} s")
    print(f"scheduling-efficiency ceiling on the harness: {ideal / (ideal + turns * median_s):.3f} "
          f"(ideal / (ideal + {turns} x median lateness))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
