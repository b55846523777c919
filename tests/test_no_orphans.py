"""No orphans: whatever the demo or a test starts dies with it, even when it is SIGKILLed.

Checked by pid and start time (tests/procs.py), never by process name, so
parallel test runs on one machine cannot disturb each other.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from gateway.sim import children
from tests.procs import Proc, descendants, proc, survivors, wait_for_child

PY = sys.executable
REPO = Path(__file__).resolve().parent.parent
DEMO_KILLS = 3
CHILD_START_S = 30.0
"""The demo starts its broker after its imports, about a second; a loaded CI box may be slower."""

PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from gateway.sim import children
    start = children.spawn if sys.argv[1] == "spawn" else subprocess.Popen
    child = start(["sleep", "120"])
    print(child.pid, flush=True)
    time.sleep(120)
""")


def _parent_with_sleeping_child(how: str) -> tuple[subprocess.Popen[str], Proc]:
    parent = subprocess.Popen([PY, "-c", PARENT, how], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    child = proc(pid)
    assert child is not None
    return parent, child


def test_a_spawned_child_dies_with_its_sigkilled_parent() -> None:
    parent, child = _parent_with_sleeping_child("spawn")
    with parent:
        parent.kill()
    assert survivors([child]) == [], "the child outlived its SIGKILLed parent"


def test_a_plain_popen_child_outlives_its_parent() -> None:
    """The control: without spawn, the same child is orphaned (so the test above can fail)."""
    parent, child = _parent_with_sleeping_child("popen")
    try:
        with parent:
            parent.kill()
        assert survivors([child], timeout=1.0) == [child]
    finally:
        os.kill(child.pid, signal.SIGKILL)


def test_spawn_keeps_the_program_pid_and_exit_code(tmp_path: Path) -> None:
    with children.spawn(["sh", "-c", "echo $$; exit 3"], stdout=subprocess.PIPE, text=True) as child:
        out, _ = child.communicate(timeout=10)
    assert int(out) == child.pid, "the program runs in the process Popen knows (the trampoline exec'd it)"
    assert child.returncode == 3
    done = children.run(["sh", "-c", "cat; echo err >&2"], input="in", capture_output=True, text=True,
                        timeout=10)
    assert (done.returncode, done.stdout, done.stderr) == (0, "in", "err\n")


def test_broker_fixture_dies_with_a_sigkilled_test_process(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from tests.conftest import Broker, free_port
        broker = Broker(free_port(), Path({str(tmp_path)!r}))
        broker.start()
        print(broker.proc.pid, flush=True)
        time.sleep(120)
    """)
    with subprocess.Popen([PY, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO) as runner:
        assert runner.stdout is not None
        broker = proc(int(runner.stdout.readline()))
        runner.kill()
    assert broker is not None
    assert broker.name == "mosquitto"
    left = survivors([broker])
    for p in left:
        os.kill(p.pid, signal.SIGKILL)
    assert left == [], "mosquitto outlived the SIGKILLed process that started it"


def test_sigkilled_demo_leaves_no_process_behind(tmp_path: Path) -> None:
    """SIGKILL the demo itself (not its process group), several times: nothing of it is left."""
    data = tmp_path / "demo"
    left: list[Proc] = []
    started = 0
    log = (tmp_path / "demo.log").open("w")
    for _ in range(DEMO_KILLS):
        demo = subprocess.Popen([PY, "-m", "gateway", "demo", "--speed", "900", "--web-port", "0",
                                 "--data-dir", str(data)], stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
        try:
            wait_for_child(demo.pid, "mosquitto", CHILD_START_S)
            time.sleep(0.3)
            tree = descendants(demo.pid)
            started += len(tree)
        finally:
            demo.kill()
            demo.wait()
        left += survivors(tree)
    log.close()
    for p in left:
        os.kill(p.pid, signal.SIGKILL)
    assert started >= DEMO_KILLS, "each demo had started its broker"
    assert left == [], f"left running after {DEMO_KILLS} SIGKILLs of the demo: {left}"
