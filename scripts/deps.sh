# Shared by scripts/local-cluster.sh and scripts/test.sh: install what is missing on
# Debian/Ubuntu (apt-get, through sudo unless root) and a Rust toolchain new enough for the crate.
# Sourced, not run. Callers may set LOG_TAG and EXTRA_PACKAGES (command:package pairs).

if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
log() { printf '%s\n' "${LOG_TAG:-stolon}: $*" >&2; }
die() { log "error: $*"; exit 1; }

pg_bin_dir() {
  if [ -x /usr/lib/postgresql/15/bin/postgres ]; then echo /usr/lib/postgresql/15/bin; return; fi
  # Any PostgreSQL 13 or newer (wal_keep_size) works; take the newest installed.
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

ensure_deps() {
  local missing=() pair
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v etcdctl >/dev/null || missing+=(etcd-client)
  command -v protoc >/dev/null || missing+=(protobuf-compiler)
  command -v cc >/dev/null || missing+=(build-essential)
  command -v curl >/dev/null || missing+=(curl ca-certificates)
  command -v psql >/dev/null || missing+=(postgresql-client)
  command -v setsid >/dev/null || missing+=(util-linux)
  # etcd TLS goes through OpenSSL (the openssl crate links the system library).
  pkg-config --exists openssl 2>/dev/null || missing+=(pkg-config libssl-dev)
  for pair in ${EXTRA_PACKAGES[@]+"${EXTRA_PACKAGES[@]}"}; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  [ -n "$(pg_bin_dir)" ] || missing+=(postgresql-server)
  [ ${#missing[@]} -gt 0 ] || return 0
  "${SUDO[@]}" apt-get update -qq
  if [[ " ${missing[*]} " == *" postgresql-server "* ]]; then
    # PostgreSQL 15 is what the project is tested with; where the distribution lacks it
    # (e.g. Ubuntu) its default major version (13 or newer) is used.
    local pg=postgresql
    apt-cache show postgresql-15 >/dev/null 2>&1 && pg=postgresql-15
    missing=("${missing[@]/postgresql-server/$pg}")
  fi
  log "installing ${missing[*]} with apt-get"
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
  [ -n "$(pg_bin_dir)" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql after installing"
}

ensure_rust() {
  export PATH="$HOME/.cargo/bin:$PATH"
  # rust-version in Cargo.toml (let-chains need 1.88); distribution packages are usually older.
  if command -v cargo >/dev/null && rustc --version | awk '{split($2,v,"."); exit !(v[1]>1 || v[2]>=88)}'; then
    return
  fi
  if command -v rustup >/dev/null; then
    rustup toolchain install stable --profile minimal && rustup default stable
  else
    log "installing Rust with rustup (https://rustup.rs)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  fi
}

