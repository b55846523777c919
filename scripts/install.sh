#!/usr/bin/env bash
# Install the gateway on a box as a systemd service (run as root from a checkout):
#   sudo ./scripts/install.sh
# Puts the code in /opt/meter-gateway, the config in /etc/meter-gateway, the
# state (ledger, keys) in /var/lib/meter-gateway, and enables the service only
# once the config passes check-config.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }
src="$(cd "$(dirname "$0")/.." && pwd)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
id meter-gateway >/dev/null 2>&1 || useradd --system --home /var/lib/meter-gateway --shell /usr/sbin/nologin \
  --groups dialout meter-gateway
mkdir -p /opt/meter-gateway /etc/meter-gateway
cp -r "$src/pyproject.toml" "$src/README.md" "$src/gateway" "$src/cloud_sync" "$src/firmware_profiles" /opt/meter-gateway/
[ -x /opt/meter-gateway/.venv/bin/python ] || python3 -m venv /opt/meter-gateway/.venv
/opt/meter-gateway/.venv/bin/pip install -q /opt/meter-gateway
[ -f /etc/meter-gateway/gateway.toml ] || install -m 0640 -g meter-gateway "$src/examples/gateway.toml" /etc/meter-gateway/
install -m 0644 "$src/systemd/meter-gateway.service" /etc/systemd/system/
systemctl daemon-reload
if /opt/meter-gateway/.venv/bin/meter-gateway check-config /etc/meter-gateway/gateway.toml; then
  systemctl enable --now meter-gateway
  echo "running. Public key for enrolment:"
  sudo -u meter-gateway /opt/meter-gateway/.venv/bin/meter-gateway identity --config /etc/meter-gateway/gateway.toml
else
  echo "edit /etc/meter-gateway/gateway.toml until check-config passes, then: systemctl enable --now meter-gateway"
fi
