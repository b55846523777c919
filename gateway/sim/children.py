"""Child processes that die with their parent, even when the parent is SIGKILLed.

The demo starts a mosquitto broker beside the gateway, and the tests start
brokers, receivers and demos. Killed with SIGKILL, a parent runs no cleanup:
its children were reparented to init and kept running (twelve brokers after
twelve kills). Every such child is started here, under a tiny trampoline that
arms Linux's ``PR_SET_PDEATHSIG`` in the child and then ``exec``s the real
program, so the kernel itself sends the child SIGKILL when the parent dies.

Why a trampoline and not ``preexec_fn``: ``preexec_fn`` runs Python between
``fork`` and ``exec`` in a process that may have threads (aiosqlite, uvicorn),
which can deadlock. The trampoline is a fresh interpreter (``-I -S``, about
20 ms) with no threads.

Caveats:

* The signal fires when the *thread* that forked the child exits, not the
  process. Start children from the main thread (the demo starts its broker from
  the event loop's); one started from a worker thread (``asyncio.to_thread``)
  lives only as long as that thread, which for the loop's executor is until the
  loop closes.
* The kernel clears the setting when the child changes its credentials
  (``setuid``, a set-user-ID binary): a child must not drop privileges. For
  mosquitto that means a ``user`` line naming the user it already runs as
  (started as root it would otherwise switch to ``mosquitto`` and outlive us).
* Linux only; elsewhere :func:`spawn` is a plain ``Popen`` (the demo still
  stops its broker on a normal exit).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

PR_SET_PDEATHSIG = 1
"""From <linux/prctl.h>."""

_TRAMPOLINE = (
    "import ctypes, os, sys\n"
    f"if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, int(sys.argv[2]), 0, 0, 0) != 0:\n"
    "    sys.exit('children: prctl(PR_SET_PDEATHSIG) failed: ' + os.strerror(ctypes.get_errno()))\n"
    # The parent may have died between fork and prctl: then nobody would send the signal.
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def _resolve(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise FileNotFoundError(2, f"{program}: not found on PATH", program)
    return os.path.abspath(found)


def spawn(argv: Sequence[str], *, death_signal: int = signal.SIGKILL, **popen: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(argv, **popen)`` whose process the kernel kills when this one dies.

    ``proc.pid`` is the program's own pid (the trampoline ``exec``s it), so
    signals, ``wait`` and exit codes behave as with a plain ``Popen``.
    """
    if not argv:
        raise ValueError("spawn needs a program to run")
    if "executable" in popen or "preexec_fn" in popen:
        raise TypeError("spawn chooses the executable itself and never uses preexec_fn")
    program = _resolve(argv[0])
    if not sys.platform.startswith("linux"):
        return subprocess.Popen([program, *argv[1:]], **popen)
    trampoline = [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(os.getpid()), str(int(death_signal))]
    return subprocess.Popen([*trampoline, program, *argv[1:]], **popen)


STACKS_GRACE_S = 1.0
"""After SIGUSR1, before SIGABRT: time for a gateway's loop to print its tasks."""


def run(argv: Sequence[str], *, timeout: float | None = None, check: bool = False,
        stacks_s: float | None = None, **popen: Any) -> subprocess.CompletedProcess[Any]:
    """:func:`subprocess.run` through :func:`spawn`: the child dies with us (or after ``timeout`` seconds).

    ``stacks_s``: a gateway child that outlives ``timeout`` is first asked for its stacks, SIGUSR1 for its
    asyncio tasks (``gateway.cli``) and SIGABRT for its threads (faulthandler: run it with
    ``PYTHONFAULTHANDLER=1``), and given this long to print them; the ``TimeoutExpired`` carries them.
    """
    if popen.pop("capture_output", False):
        popen["stdout"] = popen["stderr"] = subprocess.PIPE
    stdin = popen.pop("input", None)
    if stdin is not None:
        popen["stdin"] = subprocess.PIPE
    with spawn(argv, **popen) as proc:
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            if stacks_s is None:
                proc.kill()
                proc.wait()
                raise
            proc.send_signal(signal.SIGUSR1)
            time.sleep(STACKS_GRACE_S)
            proc.send_signal(signal.SIGABRT)
            try:
                out, err = proc.communicate(timeout=stacks_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            raise subprocess.TimeoutExpired(exc.cmd, exc.timeout, out, err) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    done = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    if check:
        done.check_returncode()
    return done
