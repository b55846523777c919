"""Processes by pid, for tests that check nothing outlives what they killed.

A process is named by its pid *and* its start time (``/proc/PID/stat`` field 22),
so a pid the kernel reuses is never mistaken for the process it was, and parallel
test runs never look at each other's brokers (nothing here matches by name).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
GONE_WAIT_S = 5.0
"""A SIGKILLed parent's children get their death signal at once; this bounds a loaded CI box."""


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int
    """Start time in clock ticks since boot: with the pid, unique for the machine's uptime."""
    name: str


def _stat(pid: int) -> tuple[str, str, int, int] | None:
    """(name, state, ppid, start time) of a process, or None if there is none."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The name is in parentheses and may hold spaces or parentheses itself.
    name = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return name, fields[0], int(fields[1]), int(fields[19])


def proc(pid: int) -> Proc | None:
    found = _stat(pid)
    return None if found is None else Proc(pid, found[3], found[0])


def alive(p: Proc) -> bool:
    """Still running: same pid, same start time, and not a zombie waiting to be reaped."""
    found = _stat(p.pid)
    return found is not None and found[3] == p.start and found[1] not in ("Z", "X")


def descendants(pid: int) -> list[Proc]:
    """Every living process below ``pid`` (children, their children, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir(PROC):
        if entry.isdigit() and (found := _stat(int(entry))) is not None and found[1] not in ("Z", "X"):
            parents.setdefault(found[2], []).append(int(entry))
    out: list[Proc] = []
    todo = list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        if (p := proc(child)) is not None:
            out.append(p)
        todo.extend(parents.get(child, []))
    return out


def survivors(procs: list[Proc], timeout: float = GONE_WAIT_S) -> list[Proc]:
    """Those of ``procs`` still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in procs if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def wait_for_child(pid: int, name: str, timeout: float) -> Proc:
    """The first living descendant of ``pid`` called ``name``, once it exists."""
    deadline = time.monotonic() + timeout
    parent = proc(pid)
    while time.monotonic() < deadline and parent is not None and alive(parent):
        for p in descendants(pid):
            if p.name == name:
                return p
        time.sleep(0.02)
    raise AssertionError(f"process {pid} started no {name!r} (within {timeout} s, or it exited)")


PR_SET_CHILD_SUBREAPER = 36
"""From <linux/prctl.h>."""


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl failed")


def children_of(pid: int) -> list[Proc]:
    """Direct children of ``pid``, zombies included."""
    out = []
    for entry in os.listdir(PROC):
        if entry.isdigit() and (found := _stat(int(entry))) is not None and found[2] == pid:
            out.append(Proc(int(entry), found[3], found[0]))
    return out


class Adopter:
    """Makes this process the subreaper of everything it starts, for a ``with`` block.

    A SIGKILLed child's own children are then re-parented to us instead of init,
    at once and exactly (the kernel does it before the killed child can be waited
    for), so after each kill we see everything it left behind, even a process it
    started a millisecond before the kill, without scanning the tree in advance.
    """

    def __init__(self) -> None:
        self._before: set[int] = set()

    def __enter__(self) -> Adopter:
        # Children the test process already had (e.g. a session's PostgreSQL server) are not ours to judge.
        self._before = {p.pid for p in children_of(os.getpid())}
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        return self

    def __exit__(self, *exc: object) -> None:
        _prctl(PR_SET_CHILD_SUBREAPER, 0)
        for p in children_of(os.getpid()):  # reap what died meanwhile; the living are someone's to stop
            if not alive(p):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(p.pid, os.WNOHANG)

    def collect(self, ours: set[int], timeout: float = GONE_WAIT_S) -> tuple[int, list[Proc]]:
        """After a kill: (how many processes were left to us, those still alive after ``timeout``).

        ``ours`` are the pids we started and still hold (they are our children anyway). The
        dead are reaped; the living are killed, after being reported.
        """
        me = os.getpid()
        adopted = [p for p in children_of(me) if p.pid not in ours and p.pid not in self._before]
        left = survivors(adopted, timeout)
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
        for p in adopted:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(p.pid, 0)
        return len(adopted), left
