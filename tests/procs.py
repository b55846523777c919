"""Processes by pid, for tests that check nothing outlives what they killed.

A process is named by its pid *and* its start time (``/proc/PID/stat`` field 22),
so a pid the kernel reuses is never mistaken for the process it was, and parallel
test runs never look at each other's brokers (nothing here matches by name).
"""

from __future__ import annotations

import os
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
