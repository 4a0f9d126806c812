#!/usr/bin/env bash
# Real-systemd smoke test of the .deb: boots a Debian bookworm container with systemd-nspawn (its own
# network namespace), installs our package with etcd-server and postgresql-15 from Debian inside,
# starts etcd and stolon@smoke.target (keeper, sentinel, socket-activated proxy) and checks from the
# host, through the container's namespaces:
#   - every stolon unit is active (running / listening) and shows our STATUS= text;
#   - journalctl -o json carries our structured fields (CLUSTER_NAME, ROLE);
#   - psql through the proxy socket reaches the master (our keeper's PostgreSQL, not Debian's);
#   - a distribution PostgreSQL keeps port 5432 beside the proxy's socket;
#   - the proxy with in-kernel forwarding, turned on with the drop-in the package ships, loads its
#     eBPF program under the unit's sandbox and carries psql's session in the kernel;
#   - `systemctl stop stolon@smoke.target` stops the keeper cleanly and leaves no PostgreSQL of it.
# Each check prints a PASS or FAIL line; the exit status is non-zero when any failed. The container
# and its copy of the root are removed on every exit path.
#
# Usage (as root): vm-tests/nspawn-smoke.sh [PATH/TO/stolon_*.deb]
#   default: the newest target/debian/stolon_*.deb (packaging/build.sh makes it).
# Env: STOLON_VM_CACHE (default /var/cache/stolon-vm-tests) holds the debootstrapped root, built once
#      (about 3 minutes; later runs copy it). MIRROR overrides the Debian mirror, which is otherwise
#      the one this host's apt uses.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cluster=smoke
units=("stolon-keeper@$cluster.service" "stolon-sentinel@$cluster.service"
    "stolon-proxy@$cluster.service" "stolon-proxy@$cluster.socket")
su_password=smoke-su-secret
repl_password=smoke-repl-secret

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 2; }

# The cached root (debootstrap once, the .debs of etcd and PostgreSQL downloaded into it); shared
# with the host-failure suite (vm-tests/run).
# shellcheck source=vm-tests/lib/root-cache.sh
. "$repo/vm-tests/lib/root-cache.sh"
inside_pkgs=("${vm_inside_pkgs[@]}")

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, systemd-nspawn and nsenter need it)"
for tool in debootstrap systemd-nspawn nsenter; do
    command -v "$tool" >/dev/null || die "$tool missing (apt-get install debootstrap systemd-container util-linux)"
done

deb=${1:-$(ls -t "$repo"/target/debian/stolon_*.deb 2>/dev/null | head -n 1 || true)}
[[ -n $deb && -f $deb ]] || die "no .deb (run packaging/build.sh or pass its path)"

# ---------------------------------------------------------------------------------------------
work=
nspawn_pid=
machine=stolon-smoke-$$
cleanup() {
    local rc=$?
    if [[ -n $nspawn_pid ]] && kill -0 "$nspawn_pid" 2>/dev/null; then
        # SIGTERM makes nspawn ask the container's systemd to power off.
        kill -TERM "$nspawn_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$nspawn_pid" 2>/dev/null || true
        wait "$nspawn_pid" 2>/dev/null || true
    fi
    if [[ -n $work ]]; then rm -rf --one-file-system "$work"; fi
    rm -rf --one-file-system "/run/systemd/nspawn/propagate/$machine" 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

vm_prepare_cache
work=$(mktemp -d /var/tmp/stolon-smoke.XXXXXX)
root=$work/root
log "copying the cached root"
cp -a "$vm_cache/$vm_suite" "$root"
cp "$deb" "$root/root/stolon.deb"

# The cluster's settings, written before boot (the package only ships /etc/stolon/example).
mkdir -p "$root/etc/stolon/$cluster" "$root/etc/credstore"
cat >"$root/etc/stolon/$cluster/keeper.toml" <<EOF
store-backend = "etcdv3"
store-endpoints = "http://127.0.0.1:2379"
uid = "keeper0"
pg-listen-address = "127.0.0.1"
pg-port = 25433
pg-bin-path = "/usr/lib/postgresql/15/bin"
pg-su-username = "postgres"
pg-su-auth-method = "md5"
pg-repl-username = "repluser"
pg-repl-auth-method = "md5"
EOF
cat >"$root/etc/stolon/$cluster/sentinel.toml" <<EOF
store-backend = "etcdv3"
store-endpoints = "http://127.0.0.1:2379"
initial-cluster-spec = "/etc/stolon/$cluster/cluster-spec.json"
EOF
echo '{"initMode": "new"}' >"$root/etc/stolon/$cluster/cluster-spec.json"
# As the shipped example: used only if systemd passed no socket (then it clashes with the socket
# unit's own 127.0.0.1:25432, so the proxy must take the activated socket to pass).
cat >"$root/etc/stolon/$cluster/proxy.toml" <<EOF
store-backend = "etcdv3"
store-endpoints = "http://127.0.0.1:2379"
listen-address = "127.0.0.1"
port = 25432
EOF
chmod 0644 "$root/etc/stolon/$cluster"/*
chmod 0700 "$root/etc/credstore"
( umask 077
  printf '%s' "$su_password" >"$root/etc/credstore/stolon-$cluster-pg-su-password"
  printf '%s' "$repl_password" >"$root/etc/credstore/stolon-$cluster-pg-repl-password" )

log "booting the container"
# CAP_BPF and bpf(2) for the proxy's in-kernel forwarding (nspawn grants neither by default;
# CAP_NET_ADMIN comes with the private network).
systemd-nspawn -q -D "$root" -M "$machine" -b --register=no --keep-unit --private-network \
    --capability=CAP_BPF --system-call-filter=bpf \
    --console=read-only >"$work/console.log" 2>&1 </dev/null &
nspawn_pid=$!

# The container's PID 1 is the child of nspawn in another PID namespace (nspawn's short-lived
# intermediate child is in ours).
pid1=
own_pidns=$(readlink /proc/self/ns/pid)
for _ in $(seq 1 100); do
    for child in $(pgrep -P "$nspawn_pid" || true); do
        ns=$(readlink "/proc/$child/ns/pid" 2>/dev/null || true)
        if [[ -n $ns && $ns != "$own_pidns" ]]; then pid1=$child; break; fi
    done
    [[ -n $pid1 ]] && break
    kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/console.log" >&2; die "systemd-nspawn exited"; }
    sleep 0.1
done
[[ -n $pid1 ]] || die "no container PID 1 after 10 s"

# Runs a command inside the container, as root, with a clean environment.
inside() {
    nsenter -t "$pid1" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}

booted=
for _ in $(seq 1 300); do
    state=$(inside systemctl is-system-running 2>/dev/null || true)
    if [[ $state == running || $state == degraded ]]; then booted=1; break; fi
    sleep 0.1
done
[[ -n $booted ]] || { tail -n 30 "$work/console.log" >&2; die "container did not finish booting in 30 s"; }
log "container up (PID 1 = $pid1, state $state)"

fails=0
passes=0
pass() { echo "PASS: $*"; passes=$((passes + 1)); }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

log "installing stolon.deb ${inside_pkgs[*]} inside (offline)"
if inside env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends /root/stolon.deb "${inside_pkgs[@]}" >"$work/apt.log" 2>&1; then
    pass "apt-get install stolon.deb ${inside_pkgs[*]}"
else
    tail -n 30 "$work/apt.log"
    fail "apt-get install stolon.deb ${inside_pkgs[*]}"
    exit 1
fi
if inside id postgres >/dev/null && [[ $(inside stat -c '%U %a' /var/lib/stolon) == "postgres 750" ]]; then
    pass "postgres user exists, /var/lib/stolon is postgres 0750 (sysusers, tmpfiles)"
else
    fail "postgres user or /var/lib/stolon (sysusers, tmpfiles)"
fi

# etcd-server's postinst enabled and started it; Type=notify makes active mean serving.
inside systemctl start etcd.service
if inside systemctl is-active -q etcd.service; then pass "etcd.service active"; else fail "etcd.service not active"; exit 1; fi

log "starting stolon@$cluster.target"
inside systemctl start "stolon@$cluster.target"

# Waits until a unit is in the wanted state with a STATUS= text, or the deadline passes.
wait_unit() {
    local unit=$1 sub=$2 deadline=$((SECONDS + $3)) props
    while ((SECONDS < deadline)); do
        props=$(inside systemctl show -p ActiveState -p SubState -p StatusText "$unit")
        if grep -qx 'ActiveState=active' <<<"$props" && grep -qEx "SubState=($sub)" <<<"$props" &&
            { [[ $unit == *.socket ]] || grep -q '^StatusText=.' <<<"$props"; }; then
            return 0
        fi
        sleep 0.5
    done
    return 1
}

# The proxy socket first, then psql through it: it answers once the sentinel has initialised the
# cluster and the keeper's PostgreSQL is master.
if wait_unit "stolon-proxy@$cluster.socket" "listening|running" 30; then
    pass "stolon-proxy@$cluster.socket active (listening) on $(inside systemctl show -p Listen --value "stolon-proxy@$cluster.socket")"
else
    fail "stolon-proxy@$cluster.socket not listening"
fi

# Prints what `query` returns through the proxy, retried until it answers or `seconds` pass (then
# psql's last error).
psql_through_proxy() {
    local query=$1 deadline=$((SECONDS + $2)) out=
    while ((SECONDS < deadline)); do
        out=$(inside env PGPASSWORD="$su_password" PGCONNECT_TIMEOUT=3 \
            psql "host=127.0.0.1 port=25432 user=postgres dbname=postgres" -XAtc "$query" 2>&1) && break
        sleep 1
    done
    printf '%s' "$out"
}

psql_out=$(psql_through_proxy "select pg_is_in_recovery(), inet_server_port()" 120)
if [[ $psql_out == "f|25433" ]]; then
    pass "psql through the proxy (127.0.0.1:25432) reaches the master (in recovery: f, server port 25433; md5 with the superuser password from the credstore credential)"
else
    fail "psql through the proxy: ${psql_out:-no answer}"
fi

for unit in "${units[@]}"; do
    # A socket whose service runs is "running" rather than "listening".
    sub=running; [[ $unit == *.socket ]] && sub='listening|running'
    if wait_unit "$unit" "$sub" 30; then
        status=$(inside systemctl show -p StatusText --value "$unit")
        pass "$unit active ($sub)${status:+, status: $status}"
    else
        fail "$unit not active ($sub) with a status text: $(inside systemctl show -p ActiveState -p SubState -p StatusText "$unit" | tr '\n' ' ')"
    fi
done
echo "---- systemctl status"
inside systemctl status --no-pager --lines=0 "${units[@]}" || true
echo "----"

for role in keeper sentinel proxy; do
    unit=stolon-$role@$cluster.service
    json=$(inside journalctl -u "$unit" -o json --no-pager 2>/dev/null || true)
    if grep -q "\"CLUSTER_NAME\":\"$cluster\"" <<<"$json" && grep -q "\"ROLE\":\"$role\"" <<<"$json"; then
        fields=$(grep -o '"\(CLUSTER_NAME\|ROLE\|KEEPER_UID\|DB_UID\)":"[^"]*"' <<<"$json" | sort -u | tr '\n' ' ')
        pass "journal of $unit has structured fields: $fields"
    else
        fail "journal of $unit lacks CLUSTER_NAME=$cluster / ROLE=$role"
    fi
done

# In-kernel forwarding under the unit: the drop-in the package ships, and the setting.
log "restarting the proxy with kernel-forwarding = true"
inside mkdir -p "/etc/systemd/system/stolon-proxy@$cluster.service.d"
inside cp /usr/share/doc/stolon/examples/kernel-forwarding.conf \
    "/etc/systemd/system/stolon-proxy@$cluster.service.d/"
inside sh -c "printf '%s\n' 'kernel-forwarding = true' 'metrics-listen-address = \"127.0.0.1:25490\"' \
    >>/etc/stolon/$cluster/proxy.toml"
inside systemctl daemon-reload
inside systemctl restart "stolon-proxy@$cluster.service" || true
kernel_psql=$(psql_through_proxy "select count(*) from generate_series(1, 10000)" 60)
# The last start's journal entry (tracing-journald puts each field in a journal field of its own).
started=$(inside journalctl -u "stolon-proxy@$cluster.service" --no-pager -o json |
    grep '"MESSAGE":"proxy starting"' | tail -n 1 | grep -o '"KERNEL_FORWARDING":"[a-z]*"' || true)
forwarded=$(inside timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/25490 &&
    printf "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" >&3 && cat <&3' 2>/dev/null |
    awk '$1 == "stolon_proxy_kernel_forwarded_sessions_total" { print $2 }' || true)
if [[ $kernel_psql == 10000 && $started == '"KERNEL_FORWARDING":"true"' && ${forwarded:-0} -ge 1 ]]; then
    pass "proxy with kernel-forwarding = true and the shipped drop-in: running, psql through it answers, $forwarded session(s) forwarded in the kernel"
else
    fail "kernel forwarding under the unit: psql ${kernel_psql:-no answer}; start entry: ${started:-none}; kernel-forwarded sessions: ${forwarded:-none}"
fi

if inside runuser -u postgres -- psql -h /var/run/postgresql -p 5432 -XAtc 'select 1' >/dev/null 2>&1; then
    pass "Debian's own PostgreSQL still serves port 5432 beside the proxy"
else
    fail "Debian's PostgreSQL (postgresql@15-main, port 5432) not reachable"
fi

# Stop: every process of the keeper's cgroup must be gone and PostgreSQL shut down cleanly
# (postmaster.pid removed), without systemd having to SIGKILL anything.
cg=$(inside systemctl show -p ControlGroup --value "stolon-keeper@$cluster.service")
keeper_pids=$(inside cat "/sys/fs/cgroup/systemd$cg/cgroup.procs" 2>/dev/null || inside cat "/sys/fs/cgroup$cg/cgroup.procs" 2>/dev/null || true)
log "stopping stolon@$cluster.target (keeper cgroup had $(wc -w <<<"$keeper_pids") processes)"
inside systemctl stop "stolon@$cluster.target"
left=
for pid in $keeper_pids; do
    if inside test -d "/proc/$pid"; then left+=" $pid"; fi
done
states=$(for u in "${units[@]}"; do printf '%s=%s ' "$u" "$(inside systemctl is-active "$u" || true)"; done)
result=$(inside systemctl show -p Result --value "stolon-keeper@$cluster.service")
if [[ -z $keeper_pids ]]; then
    fail "stop: the keeper's cgroup had no processes to check"
elif [[ -n $left ]] || inside test -e "/var/lib/stolon/$cluster/postgres/postmaster.pid"; then
    fail "stop left keeper/PostgreSQL processes:$left (postmaster.pid: $(inside test -e "/var/lib/stolon/$cluster/postgres/postmaster.pid" && echo present || echo gone))"
elif [[ $states == *=active* || $states == *=activating* || $states == *=deactivating* ]]; then
    fail "stop: units still up: $states"
elif [[ $result != success ]]; then
    fail "stop: keeper unit result $result (a SIGKILL or a failure, not a clean exit)"
else
    pass "systemctl stop stolon@$cluster.target: $states; no keeper/PostgreSQL process left, postmaster.pid gone, keeper result success"
fi

if ((fails)); then
    for unit in "${units[@]}"; do
        echo "---- journal of $unit (last 25 lines)"
        inside journalctl -u "$unit" --no-pager -n 25 -o short-precise || true
    done
fi
echo "nspawn-smoke: $passes passed, $fails failed"
((fails == 0))
