"""Commands the demo suggests, written so they can be pasted as printed (pure apart from reading argv/PATH).

A newcomer copies what the demo prints: placeholders such as YYYY-MM-DD get
pasted too, and ``meter-gateway`` is not on PATH when the gateway was started
from a virtualenv as ``.venv/bin/meter-gateway``.
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import sys
from pathlib import Path
from zoneinfo import ZoneInfo


def cli_command(argv0: str | None = None, executable: str | None = None) -> str:
    """How to call this gateway's CLI again from the same shell: its name if PATH finds this very binary."""
    argv0 = argv0 if argv0 is not None else sys.argv[0]
    executable = executable if executable is not None else sys.executable
    script = Path(argv0)
    if script.name == "meter-gateway":
        on_path = shutil.which("meter-gateway")
        if on_path and os.path.realpath(on_path) == os.path.realpath(script):
            return "meter-gateway"
        return shlex.quote(str(script.resolve()))
    return f"{shlex.quote(executable)} -m gateway"  # started as python -m gateway (or from a test)


def bill_hint(command: str, config: Path, first_t: float, last_t: float, tz: str, meter: str) -> str:
    """The bill command covering every local day the demo has produced, --to exclusive as ``bill`` wants."""
    zone = ZoneInfo(tz)
    first = dt.datetime.fromtimestamp(first_t, zone).date()
    after_last = dt.datetime.fromtimestamp(last_t, zone).date() + dt.timedelta(days=1)
    return (f"{command} bill {meter} --config {shlex.quote(str(config))} --from {first.isoformat()} "
            f"--to {after_last.isoformat()}")
