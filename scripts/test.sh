#!/usr/bin/env bash
# Runs every test: unit, property and the multi-process cluster tests (real etcd, real
# PostgreSQL, the real binaries). Installs what is missing first (apt-get, sudo unless root).
# Extra arguments go to cargo nextest (e.g. scripts/test.sh cluster_failover).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=test
EXTRA_PACKAGES=(openssl:openssl)
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"

ensure_deps
ensure_rust
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
cd "$REPO"
# The cluster tests find PostgreSQL here (see tests/support).
STOLON_TEST_PG_BIN=${STOLON_TEST_PG_BIN:-$(pg_bin_dir)}
export STOLON_TEST_PG_BIN
cargo nextest run --no-fail-fast "$@"
if [ $# -eq 0 ]; then cargo test --doc; fi
