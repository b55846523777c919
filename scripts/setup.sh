#!/usr/bin/env bash
# Set up a development/demo checkout on Debian or Raspberry Pi OS:
# system packages the tests and demo use (mosquitto), a virtualenv in .venv,
# and the gateway installed into it with its development tools.
#   --test-services   also what only the tests use: the PostgreSQL server binaries the receiver's
#                     tests start (Debian's postgresql; the tests run their own server on a free
#                     port) and libfuse3 for the power-cut test's FUSE file system (fuse3)
set -euo pipefail
cd "$(dirname "$0")/.."

test_services=0
for arg in "$@"; do
  case "$arg" in
    --test-services) test_services=1 ;;
    *) echo "usage: $0 [--test-services]" >&2; exit 2 ;;
  esac
done

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

python3 - <<'PY' || { echo "meter-gateway needs Python >= 3.11 (found $(python3 --version))" >&2; exit 1; }
import sys
raise SystemExit(0 if sys.version_info >= (3, 11) else 1)
PY

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
if [ "$test_services" -eq 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
if [ "$test_services" -eq 1 ] && ! { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q libfuse3.so.3; then
  need+=(fuse3)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing system packages: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev,receiver-pg]'
echo "ready: .venv/bin/meter-gateway --help"
