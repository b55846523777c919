"""Peak memory of the daemon on a 16-meter RTU line, against a bare Python.

One command: ``.venv/bin/python benchmarks/memory.py``

The real daemon (``python -m gateway run``) polls 16 simulated SDM630s every second on a paced
9600-baud RS-485 wire behind a pseudo-terminal, with the status page and API on (as the shared
ThingsBoard harness runs it), for ``--seconds`` after every meter has been read once; its API is
asked for the meters and lines on the way, as the harness does. Printed for each configuration: the
daemon's peak resident set (``VmHWM``), the same of ``python -c pass`` measured in this run, and
their ratio, plus the daemon's peak over the ThingsBoard IoT Gateway's on the same wire (69.7 MiB,
measured by the shared harness, not in this run: the target is at most 0.6 of it without Stellar).

Configurations: the RTU line alone; with the billing API uplink (httpx); with ``[stellar]``
(stellar-sdk, and pydantic through it: the only configuration that imports them). Under the
``[stellar]`` row, its floor: the same RTU daemon without ``[stellar]`` but with ``stellar_sdk``
imported before it starts (its package ``__init__`` loads requests, every call builder, pydantic's
models of the RPC and the whole XDR, whichever names a caller wants, so no [stellar] daemon can be
below it); the row minus the floor is what the gateway's uplink, its HTTP client and its config
add. By default the daemon runs as installed on a box (``_as_installed.py`` hides distributions
that only the development venv has, and the gateway's own modules are byte-compiled first, as
``scripts/install.sh`` does); ``--venv-as-is`` measures the venv as it is too (what the shared
harness runs).
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works without the editable install too

from benchmarks._as_installed import hidden_modules
from benchmarks._rtu_daemon import DAEMON_IMPORTS, HERE, METERS, bare_python_peak_kib, running_daemon, status_kib
from cloud_sync.keys import Keypair
from gateway.config import GatewayConfig

PEER_PEAK_MIB = 69.7
"""ThingsBoard IoT Gateway 3.8.5 on the same wire and meters (shared harness, 120 s window)."""
TARGET_RATIO_TO_PEER = 0.6


STELLAR_IMPORTS = "import stellar_sdk, stellar_sdk.server_async"
"""What a Stellar uplink needs of stellar-sdk: its transaction builder, XDR and async Horizon client."""
_IMPORT_COST = """
{daemon}
def rss():
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f if line.startswith('VmRSS:'))
before = rss()
{extra}
print(rss() - before)
"""


def stellar_import_mib() -> float:
    """RSS that stellar-sdk adds to a process that already holds the RTU daemon's imports (as installed)."""
    code = _IMPORT_COST.format(daemon=DAEMON_IMPORTS, extra=STELLAR_IMPORTS)
    env = dict(os.environ, BENCH_HIDDEN=",".join(sorted(hidden_modules())))
    out = subprocess.run([sys.executable, str(HERE / "_as_installed.py"), "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1]) / 1024


def compile_sources() -> None:
    """Bytecode for the gateway's own modules, as the installer leaves it: compiling them at start would
    count the compiler's memory (a shell with PYTHONDONTWRITEBYTECODE never writes any)."""
    root = HERE.parent
    for package in ("gateway", "cloud_sync"):
        compileall.compile_dir(root / package, quiet=1)


def _stellar_section(scheme: str = "http") -> str | None:
    """A ``[stellar]`` section for this build, or None when its configuration has none yet. ``scheme``
    https: the client then needs its verifying TLS context, as for a production Horizon."""
    if "stellar" not in GatewayConfig.model_fields:
        return None
    issuer, platform = Keypair.random().public_key, Keypair.random().public_key
    # A Horizon that does not answer: the uplink then retries with its backoff, having loaded what it needs.
    return (f'[stellar]\nhorizon_url = "{scheme}://127.0.0.1:9"\n'
            'network_passphrase = "Standalone Network ; February 2017"\n'
            f'asset_code = "KWH"\nasset_issuer = "{issuer}"\nplatform_signer = "{platform}"\nrate = "0.001"\n')


async def _measure(extra: str, *, as_installed: bool, seconds: float, meter_serials: bool,
                   preload: str = "") -> tuple[float, float]:
    """Peak and current RSS (MiB) of the daemon with ``extra`` config; ``preload``: modules imported first."""
    with tempfile.TemporaryDirectory(prefix="mg-memory-") as tmp:
        async with running_daemon(Path(tmp), extra_config=extra, as_installed=as_installed,
                                  serials=meter_serials, env={"BENCH_PRELOAD": preload} if preload else None) as daemon:
            await daemon.wait_all_read()
            await daemon.get("/api/v1/lines")
            await asyncio.sleep(seconds)
            await daemon.get("/api/v1/meters")
            return status_kib(daemon.pid, "VmHWM") / 1024, status_kib(daemon.pid, "VmRSS") / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="polling after every meter was read (20)")
    parser.add_argument("--venv-as-is", action="store_true",
                        help="also measure with the development venv as it is (dev-only packages importable)")
    args = parser.parse_args(argv)
    # The installed service's environment (systemd) has no SSL_CERT_FILE / SSL_CERT_DIR; a developer shell
    # that sets them would make the daemon parse that bundle (cloud_sync.tls honours them, as httpx does).
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        os.environ.pop(name, None)
    compile_sources()
    base = bare_python_peak_kib() / 1024
    print(f"{METERS} SDM630s on a 9600-baud RTU line, polled every 1 s, web on; {args.seconds:.0f} s after the "
          f"first full cycle")
    print(f"baseline  python -c pass: peak RSS {base:.1f} MiB")
    print(f"{'configuration':<44} {'peak MiB':>8} {'now MiB':>8} {'x python':>8} {'x peer':>7}")
    rows: list[tuple[str, str, bool]] = [
        ("RTU line (as the shared harness runs it)", "", True),
        ("RTU line + billing API uplink", '[uplinks.billing_api]\nurl = "http://127.0.0.1:9"\n', True),
    ]
    stellar = _stellar_section()
    if stellar is not None:
        rows.append(("RTU line + [stellar]", stellar, True))
        rows.append(("RTU line + [stellar], https Horizon", _stellar_section("https") or "", True))
    if args.venv_as_is:
        rows.append(("RTU line, dev venv as is (as the harness runs)", "", False))
    failed = False
    rtu_peak = 0.0
    for name, extra, as_installed in rows:
        peak, now = asyncio.run(_measure(extra, as_installed=as_installed, seconds=args.seconds,
                                         meter_serials="[stellar]" in extra))
        ratio = peak / PEER_PEAK_MIB
        print(f"{name:<44} {peak:>8.1f} {now:>8.1f} {peak / base:>8.2f} {ratio:>7.2f}")
        if as_installed and not extra:
            rtu_peak = peak
            failed |= ratio > TARGET_RATIO_TO_PEER
        if as_installed and "[stellar]" in extra:
            failed |= ratio > 1.0
        if as_installed and "[stellar]" in extra and "https://" not in extra:
            floor, floor_now = asyncio.run(_measure("", as_installed=True, seconds=args.seconds, meter_serials=False,
                                                    preload="stellar_sdk"))
            print(f"{'  floor: RTU line, stellar_sdk imported':<44} {floor:>8.1f} {floor_now:>8.1f} "
                  f"{floor / base:>8.2f} {floor / PEER_PEAK_MIB:>7.2f}")
            print(f"  (the RTU daemon with 'import stellar_sdk' and no [stellar]: stellar-sdk's own import adds "
                  f"{floor - rtu_peak:.1f} MiB; the gateway's uplink, its HTTP client and its config "
                  f"{peak - floor:.1f} MiB)")
    if stellar is None:
        # No run possible: estimated as the RTU line's peak plus what stellar-sdk's import adds to its imports.
        cost = stellar_import_mib()
        estimate = rtu_peak + cost
        print(f"{'RTU line + [stellar], ESTIMATE (no run)':<44} {estimate:>8.1f} {'':>8} {estimate / base:>8.2f} "
              f"{estimate / PEER_PEAK_MIB:>7.2f}")
        print(f"  this build's configuration has no [stellar] section yet: RTU line peak + {cost:.1f} MiB that "
              f"'{STELLAR_IMPORTS}' adds to the daemon's imports")
        failed |= estimate > PEER_PEAK_MIB
    print(f"target: RTU line <= {TARGET_RATIO_TO_PEER} x peer ({TARGET_RATIO_TO_PEER * PEER_PEAK_MIB:.1f} MiB), "
          f"with [stellar] <= 1.0 x peer -> {'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
