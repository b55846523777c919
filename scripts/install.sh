#!/usr/bin/env bash
# Install (or upgrade) the gateway on a box as a systemd service; run as root from a checkout:
#   sudo ./scripts/install.sh
# Puts the code in /opt/meter-gateway (its own virtualenv), the config in /etc/meter-gateway, the
# state (ledger, key, web token) in /var/lib/meter-gateway, and starts the service only once the
# config passes check-config. Running it again upgrades the code and keeps config and state.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }
src="$(cd "$(dirname "$0")/.." && pwd)"
opt=/opt/meter-gateway
etc=/etc/meter-gateway
state=/var/lib/meter-gateway
unit=/etc/systemd/system/meter-gateway.service
user=meter-gateway

umask 022
# The system interpreter, not whatever python3 the installing shell finds first: a pyenv or conda
# Python under /root is not readable by the service user. PYTHON=/path overrides.
py="${PYTHON:-/usr/bin/python3}"
[ -x "$py" ] || py="$(command -v python3)"
"$py" - <<'PY' || { echo "meter-gateway needs Python >= 3.11 (found $("$py" --version)); set PYTHON=/path/to/python3.11+" >&2; exit 1; }
import sys
raise SystemExit(0 if sys.version_info >= (3, 11) else 1)
PY
if ! "$py" -c "import ensurepip, venv" >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi

# A system user with its own group; dialout opens /dev/ttyUSB* and friends.
id "$user" >/dev/null 2>&1 || useradd --system --user-group --home-dir "$state" --no-create-home \
  --shell /usr/sbin/nologin --groups dialout "$user"

# Code: built from a copy, so the checkout stays untouched (it may belong to another user).
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp -r "$src/pyproject.toml" "$src/README.md" "$src/gateway" "$src/cloud_sync" "$src/firmware_profiles" "$stage/"
install -d -m 0755 "$opt"
if [ -x "$opt/.venv/bin/python" ] && ! grep -qx "executable = $(readlink -f "$py")" "$opt/.venv/pyvenv.cfg"; then
  rm -rf "$opt/.venv"  # made with another interpreter: rebuild rather than mix
fi
[ -x "$opt/.venv/bin/python" ] || "$py" -m venv "$opt/.venv"
"$opt/.venv/bin/python" -m pip install -q --upgrade pip
"$opt/.venv/bin/python" -m pip wheel -q --no-deps -w "$stage/dist" "$stage"
wheel=("$stage"/dist/meter_gateway-*.whl)
"$opt/.venv/bin/python" -m pip install -q --upgrade "${wheel[0]}"  # its dependencies
# This code even when the version number did not change (pip would keep the old build).
"$opt/.venv/bin/python" -m pip install -q --no-deps --force-reinstall "${wheel[0]}"
# Bytecode for everything, now: the service user cannot write under /opt (nor may it, with
# ProtectSystem=strict), so a module without its .pyc would be compiled again at every start (time
# and memory). pip compiles what it installs by default; this also covers a pip told not to.
site="$("$opt/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
"$opt/.venv/bin/python" -m compileall -q -j 0 "$site" >/dev/null \
  || { echo "install: could not precompile the bytecode in $site (above)" >&2; exit 1; }
install -m 0644 "$src/README.md" "$opt/README.md"

# Config is the installer's: never overwritten. State belongs to the service user alone.
install -d -m 0750 -g "$user" "$etc"
[ -f "$etc/gateway.toml" ] || install -m 0640 -g "$user" "$src/examples/gateway.toml" "$etc/gateway.toml"
install -d -m 0700 -o "$user" -g "$user" "$state"
# ... including what an earlier run left in it as root: a key made by 'sudo meter-gateway identity'
# before this install, a ledger from a daemon started by hand as root. Links are not followed.
# Its owner gets read and write back too (a key left at mode 0000 or 0200), everyone else nothing.
chown -R --no-dereference "$user:$user" "$state"
chmod -R u+rwX,go-rwx "$state"
install -m 0644 "$src/systemd/meter-gateway.service" "$unit"

as_service() { runuser -u "$user" -- "$@"; }
as_service "$opt/.venv/bin/python" -c "" || { echo "the service user cannot run $py; set PYTHON=" >&2; exit 1; }
# What the repair could not fix (a link to a file elsewhere, an immutable file, a read-only file
# system) stops the install here, rather than a daemon that cannot open its key or ledger.
# The key need only be readable (0400 is fine); the ledger, the web token and the dir itself are written.
unusable="$(as_service find "$state" \( ! -readable -o \( ! -writable ! -name gateway.key \) \) -printf '  %p\n' 2>&1)" \
  || unusable="${unusable:-  $state}"
if [ -n "$unusable" ]; then
  echo "install: $user still cannot read and write these in $state:" >&2
  echo "$unusable" >&2
  echo "(ls -la $state; lsattr for an immutable file; a link must point at a file $user owns) then run $0 again" >&2
  exit 1
fi
config_ok=yes
as_service "$opt/.venv/bin/meter-gateway" check-config "$etc/gateway.toml" || config_ok=no
echo "public key of this gateway (for enrolment):"
# The key in the state dir the unit gives the daemon (StateDirectory=), whatever the config says.
as_service "$opt/.venv/bin/meter-gateway" identity --data-dir "$state" \
  || { echo "install: $user cannot read or create its key in $state (above); fix that, then run $0 again" >&2
       exit 1; }

if [ ! -d /run/systemd/system ]; then
  echo "systemd is not running here: the unit is installed at $unit; start it on the box with"
  echo "  systemctl enable --now meter-gateway"
elif [ "$config_ok" = yes ]; then
  systemctl daemon-reload
  systemctl enable meter-gateway
  systemctl restart meter-gateway
  echo "running: systemctl status meter-gateway; journalctl -u meter-gateway -f"
else
  systemctl daemon-reload
  echo "edit $etc/gateway.toml until 'meter-gateway check-config $etc/gateway.toml' passes, then:"
  echo "  systemctl enable --now meter-gateway"
fi
