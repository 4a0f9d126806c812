#!/usr/bin/env bash
# Prints the path of the cached container root, building it first when missing or outdated.
#   vm-tests/prepare-root.sh          the bare root (debootstrap + downloaded .debs; nspawn-smoke.sh)
#   vm-tests/prepare-root.sh --hosts  the root with etcd and PostgreSQL installed (vm-tests/run)
# Env: STOLON_VM_CACHE (default /var/cache/stolon-vm-tests), MIRROR. Needs root.
set -euo pipefail
# shellcheck source=vm-tests/lib/root-cache.sh
. "$(dirname "$0")/lib/root-cache.sh"
[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap and systemd-nspawn need it)"
for tool in debootstrap systemd-nspawn; do
    command -v "$tool" >/dev/null || die "$tool missing (apt-get install debootstrap systemd-container)"
done
if [[ ${1:-} == --hosts ]]; then
    vm_prepare_hosts_root
    echo "$vm_cache/$vm_suite-hosts"
else
    vm_prepare_cache
    echo "$vm_cache/$vm_suite"
fi
