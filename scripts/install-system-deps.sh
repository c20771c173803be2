#!/usr/bin/env bash
# Install the system packages the tests need, on Debian/Ubuntu as root:
#   chromium                    real browser for the dashboard tests (driven by Playwright)
#   slurm + munge + mariadb     a real single-node SLURM cluster (scripts/slurm-cluster.sh)
# Does nothing for packages already there; warns (and the tests that need them skip) elsewhere.
set -euo pipefail
pkgs=(chromium slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-system-deps: not root on Debian/Ubuntu; missing ${missing[*]} (browser/SLURM tests will skip)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q -o DPkg::Lock::Timeout=600
apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
