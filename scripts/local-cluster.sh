#!/usr/bin/env bash
# A local stolon-rs cluster on 127.0.0.1: etcd, 3 keepers, 2 sentinels and a proxy.
#
#   scripts/local-cluster.sh up       install what is missing, build, start (idempotent: restarts
#                                     whatever is not running), wait until the proxy serves a master
#   scripts/local-cluster.sh status   processes and `stolonctl status`
#   scripts/local-cluster.sh down     stop everything this script started (by PID)
#   scripts/local-cluster.sh purge    down, then delete the state dir
#
# Environment: STOLON_LOCAL_DIR (state dir, default /tmp/stolon-local-$USER),
# STOLON_LOCAL_BASE_PORT (default 25430: proxy +2, keepers +3..+5, etcd +10/+11),
# STOLON_SLEEP_INTERVAL / STOLON_FAIL_INTERVAL (cluster spec, default 2s / 5s),
# STOLON_USE_PG_REWIND (cluster spec usePgrewind, default false),
# STOLON_LOCAL_KEEPERS / STOLON_LOCAL_SENTINELS (default 3 / 2),
# STOLON_SKIP_BUILD=1 (use the binaries already in the state dir), STOLON_CARGO_FEATURES (cargo
# features to build with, e.g. kernel-forwarding).
# The binaries are release builds: someone who benchmarks this cluster must not measure a debug
# build (the first build takes a few minutes).
# As root the keepers (and so PostgreSQL) run as the `postgres` user; otherwise as you.
set -euo pipefail
export ETCDCTL_API=3

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ME=$(id -un)
STATE=${STOLON_LOCAL_DIR:-/tmp/stolon-local-$ME}
BASE=${STOLON_LOCAL_BASE_PORT:-25430}
PROXY_PORT=$((BASE + 2))
ETCD_PORT=$((BASE + 10))
ETCD_PEER_PORT=$((BASE + 11))
CLUSTER=local
NKEEPERS=${STOLON_LOCAL_KEEPERS:-3}
NSENTINELS=${STOLON_LOCAL_SENTINELS:-2}
SU_USER=postgres
REPL_USER=repluser
case ${STOLON_USE_PG_REWIND:-false} in true | false) ;; *) echo "STOLON_USE_PG_REWIND must be true or false" >&2; exit 2 ;; esac
SPEC=$(printf '{"initMode":"new","sleepInterval":"%s","failInterval":"%s","proxyCheckInterval":"1s","proxyTimeout":"5s","convergenceTimeout":"30s","usePgrewind":%s}' \
  "${STOLON_SLEEP_INTERVAL:-2s}" "${STOLON_FAIL_INTERVAL:-5s}" "${STOLON_USE_PG_REWIND:-false}")

if [ "$(id -u)" = 0 ]; then KEEPER_USER=postgres; else KEEPER_USER=$ME; fi

LOG_TAG=local-cluster
# shellcheck source=scripts/deps.sh
. "$REPO/scripts/deps.sh"

build() {
  if [ "${STOLON_SKIP_BUILD:-0}" = 1 ] && [ -x "$STATE/bin/stolon-keeper" ]; then return; fi
  ensure_rust
  local features=()
  [ -z "${STOLON_CARGO_FEATURES:-}" ] || features=(--features "$STOLON_CARGO_FEATURES")
  log "building (cargo build --release --bins ${features[*]})"
  (cd "$REPO" && cargo build --release --bins --quiet "${features[@]}")
  # Copied so a keeper running as another user can execute them whatever the checkout's modes.
  mkdir -p "$STATE/bin"
  for b in stolon-keeper stolon-sentinel stolon-proxy stolonctl; do
    install -m 0755 "$REPO/target/release/$b" "$STATE/bin/$b"
  done
}

# The state dir holds the binaries this script runs (as root when started as root) and the
# passwords: a directory another local user created first (the default is under the shared /tmp)
# or can write to would let them replace those binaries. It must be a real directory (not a
# symlink), ours, and writable by nobody else; `up` creates it that way.
check_state_dir() {
  [ ! -L "$STATE" ] || die "$STATE is a symlink; refusing to use it (set STOLON_LOCAL_DIR to a directory of yours)"
  if [ ! -e "$STATE" ]; then
    [ "${1:-}" = create ] || return 0
    mkdir -m 0755 -- "$STATE" || die "cannot create $STATE"
  fi
  [ -d "$STATE" ] || die "$STATE is not a directory"
  local owner mode
  owner=$(stat -c %u -- "$STATE")
  mode=$(stat -c %a -- "$STATE")
  [ "$owner" = "$(id -u)" ] \
    || die "$STATE belongs to uid $owner, not to you; refusing to run binaries from it (set STOLON_LOCAL_DIR)"
  (( (8#$mode & 8#022) == 0 )) \
    || die "$STATE is writable by others (mode $mode); refusing to run binaries from it (chmod go-w it, or set STOLON_LOCAL_DIR)"
}

pidfile() { echo "$STATE/run/$1.pid"; }
running() { local f; f=$(pidfile "$1"); [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

# start NAME CMD... : in a session of its own, output to $STATE/logs/NAME.log, pid recorded.
start() {
  local name=$1; shift
  if running "$name"; then return; fi
  setsid "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
  log "started $name (pid $!)"
}

store_flags() {
  echo --cluster-name "$CLUSTER" --store-backend etcdv3 --store-endpoints "http://127.0.0.1:$ETCD_PORT"
}

ctl() { "$STATE/bin/stolonctl" $(store_flags) "$@"; }

wait_for() { # SECONDS WHAT CMD...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out waiting for $what (logs: $STATE/logs)"
    sleep 0.5
  done
}

master_serves() {
  PGPASSWORD=$(cat "$STATE/secrets/su-password") PGCONNECT_TIMEOUT=2 \
    psql -h 127.0.0.1 -p "$PROXY_PORT" -U "$SU_USER" -d postgres -tAc 'select pg_is_in_recovery()' \
    | grep -qx f
}

up() {
  [[ $NKEEPERS =~ ^[1-9]$ && $NSENTINELS =~ ^[1-9]$ ]] \
    || die "STOLON_LOCAL_KEEPERS and STOLON_LOCAL_SENTINELS must be 1 to 9 (got $NKEEPERS / $NSENTINELS)"
  ensure_deps
  [ "$KEEPER_USER" = "$ME" ] || id "$KEEPER_USER" >/dev/null 2>&1 \
    || die "user $KEEPER_USER missing (it comes with the postgresql package)"
  check_state_dir create
  mkdir -p "$STATE"/{run,logs,secrets}
  build
  chmod 0755 "$STATE" "$STATE/secrets"
  local pg_bin; pg_bin=$(pg_bin_dir)
  for s in su repl; do
    local f="$STATE/secrets/$s-password"
    [ ! -L "$f" ] || die "$f is a symlink; refusing to write a password through it"
    [ -s "$f" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$f")
    chmod 0600 "$f"
    [ "$KEEPER_USER" = "$ME" ] || chown -h "$KEEPER_USER" "$f"
  done
  cat >"$STATE/env" <<ENV
CLUSTER_NAME=$CLUSTER
ETCD_ENDPOINT=http://127.0.0.1:$ETCD_PORT
PROXY_PORT=$PROXY_PORT
SU_USER=$SU_USER
SU_PASSWORD_FILE=$STATE/secrets/su-password
NKEEPERS=$NKEEPERS
ENV

  start etcd etcd --name local --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT"
  wait_for 30 etcd etcdctl --endpoints "http://127.0.0.1:$ETCD_PORT" endpoint health

  # A cluster that already exists (state kept by `down`) is restarted, never re-initialised.
  if [ -z "$(etcdctl --endpoints "http://127.0.0.1:$ETCD_PORT" get --keys-only "stolon/cluster/$CLUSTER/clusterdata")" ]; then
    ctl init -y "$SPEC" >/dev/null
    log "initialised cluster $CLUSTER with $SPEC"
  fi

  local run_as=()
  [ "$KEEPER_USER" = "$ME" ] || run_as=(setpriv --reuid="$KEEPER_USER" --regid="$KEEPER_USER" --init-groups)
  for i in $(seq 0 $((NKEEPERS - 1))); do
    local dir="$STATE/keeper$i"
    mkdir -p "$dir"; chmod 0700 "$dir"
    [ "$KEEPER_USER" = "$ME" ] || chown -h "$KEEPER_USER:" "$dir"
    start "keeper$i" "${run_as[@]}" env HOME="$dir" "$STATE/bin/stolon-keeper" $(store_flags) \
      --uid "keeper$i" --data-dir "$dir" \
      --pg-listen-address 127.0.0.1 --pg-port $((BASE + 3 + i)) --pg-bin-path "$pg_bin" \
      --pg-repl-username "$REPL_USER" --pg-repl-passwordfile "$STATE/secrets/repl-password" \
      --pg-su-username "$SU_USER" --pg-su-passwordfile "$STATE/secrets/su-password"
  done
  for i in $(seq 0 $((NSENTINELS - 1))); do
    start "sentinel$i" "$STATE/bin/stolon-sentinel" $(store_flags)
  done
  start proxy "$STATE/bin/stolon-proxy" $(store_flags) --listen-address 127.0.0.1 --port "$PROXY_PORT"

  log "waiting for a master to serve through the proxy on 127.0.0.1:$PROXY_PORT"
  wait_for 240 "a master behind the proxy" master_serves
  cat <<MSG

stolon-rs local cluster is up (state and logs in $STATE).
Connect:
  PGPASSWORD=\$(cat $STATE/secrets/su-password) psql -h 127.0.0.1 -p $PROXY_PORT -U $SU_USER postgres
Inspect:
  $STATE/bin/stolonctl $(store_flags) status
Stop: $0 down
MSG
}

stop_one() {
  local name=$1 f pid
  f=$(pidfile "$name")
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    log "stopped $name (pid $pid)"
  fi
  rm -f "$f"
}

# A postgres left behind by a keeper killed with SIGKILL: stop it by the pid in its own pid file.
stop_orphan_postgres() {
  local pm pid
  for pm in "$STATE"/keeper*/postgres/postmaster.pid; do
    [ -f "$pm" ] || continue
    pid=$(head -n 1 "$pm")
    if grep -qs postgres "/proc/$pid/cmdline"; then
      kill -QUIT "$pid" 2>/dev/null || true
      log "stopped leftover postgres (pid $pid)"
    fi
  done
}

down() {
  [ -d "$STATE" ] || { log "nothing to stop ($STATE does not exist)"; return; }
  stop_one proxy
  for f in "$STATE"/run/sentinel*.pid; do [ -e "$f" ] && stop_one "$(basename "$f" .pid)"; done
  for f in "$STATE"/run/keeper*.pid; do [ -e "$f" ] && stop_one "$(basename "$f" .pid)"; done
  stop_orphan_postgres
  stop_one etcd
}

status() {
  for f in "$STATE"/run/*.pid; do
    [ -e "$f" ] || continue
    local n; n=$(basename "$f" .pid)
    if running "$n"; then echo "$n: running (pid $(cat "$f"))"; else echo "$n: not running"; fi
  done
  ctl status || true
}

check_state_dir
case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  purge) down; rm -rf "$STATE"; log "removed $STATE" ;;
  *) echo "usage: $0 up|status|down|purge" >&2; exit 2 ;;
esac
