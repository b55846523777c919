"""A daemon process for the storage-fault tests, forked from a process that has already imported it.

``meter-gateway run`` takes about two seconds of imports before it does anything; the full-disk
test starts it some thirty times. A ``forkserver`` that preloads this module forks each daemon
ready to run: the child is a process of its own running exactly ``meter-gateway run`` (the same
:func:`gateway.cli.main`, its signal handling and exit code), with its output in a log file.
"""

from __future__ import annotations

import os
import sys

import gateway.clock
import gateway.config
import gateway.daemon  # noqa: F401 - imported here, in the forkserver, not in every child
from gateway.cli import main


def run_cli(argv: list[str], log_path: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
