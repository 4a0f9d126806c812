# Shared by vm-tests/nspawn-smoke.sh and vm-tests/run (through vm-tests/prepare-root.sh): the
# Debian bookworm root the containers boot, debootstrapped once into $STOLON_VM_CACHE (default
# /var/cache/stolon-vm-tests) with the .debs of etcd and PostgreSQL downloaded into its apt
# archive (containers have no network but their test links), and, for the host-failure suite,
# a second cached root with those packages installed. Sourced, not run; needs root.
# Callers may define log and die first.

vm_cache=${STOLON_VM_CACHE:-/var/cache/stolon-vm-tests}
vm_suite=bookworm
# systemd to boot, procps/iproute2 to look inside; the rest comes from the downloaded .debs.
vm_include=systemd,systemd-sysv,dbus,procps,iproute2,ca-certificates
# Installed inside the containers, from .debs downloaded into the cached root (nftables: the
# partition scenario cuts links with it).
vm_inside_pkgs=(etcd-server etcd-client postgresql-15 nftables)
vm_cache_id="$vm_suite include=$vm_include download=${vm_inside_pkgs[*]} v3"

command -v log >/dev/null || log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
command -v die >/dev/null || die() { log "error: $*"; exit 2; }

# The Debian mirror this host's apt is configured with (deb822 or one-line format).
vm_host_mirror() {
    local uri
    uri=$(awk -v suite="$vm_suite" '
        /^URIs:/ { uris = $2 } /^Suites:/ { suites = $0 }
        /^$/ { if (suites ~ (" " suite "( |$)") && uris != "") { print uris; exit } uris = ""; suites = "" }
        END { if (suites ~ (" " suite "( |$)") && uris != "") print uris }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
    if [[ -z $uri && -f /etc/apt/sources.list ]]; then
        uri=$(awk -v suite="$vm_suite" '$1 == "deb" && $3 == suite { print $2; exit }' /etc/apt/sources.list)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# $vm_cache/bookworm: debootstrap (once) plus the downloaded .debs (redone when vm_cache_id changes).
vm_prepare_cache() {
    local root=$vm_cache/$vm_suite tmp=$vm_cache/$vm_suite.tmp mirror
    if [[ -f $root/.stolon-cache && $(<"$root/.stolon-cache") == "$vm_cache_id" ]]; then return; fi
    mirror=${MIRROR:-$(vm_host_mirror)}
    mkdir -p "$vm_cache"
    # A root from an older cache_id keeps its debootstrap; only the downloads are redone.
    if [[ -f $root/.debootstrap-done && ! -e $tmp ]]; then mv "$root" "$tmp"; fi
    rm -rf "$root"
    if [[ ! -f $tmp/.debootstrap-done ]]; then
        rm -rf "$tmp"
        log "debootstrap $vm_suite from $mirror into $tmp (once)"
        debootstrap --variant=minbase --include="$vm_include" "$vm_suite" "$tmp" "$mirror" >"$vm_cache/debootstrap.log" 2>&1 ||
            { tail -n 20 "$vm_cache/debootstrap.log" >&2; die "debootstrap failed (log: $vm_cache/debootstrap.log)"; }
        touch "$tmp/.debootstrap-done"
    fi
    log "downloading ${vm_inside_pkgs[*]} into the cached root"
    echo "deb $mirror $vm_suite main" >"$tmp/etc/apt/sources.list"
    # Only what the container will install stays in the archive: every run copies the root.
    chroot "$tmp" apt-get clean
    chroot "$tmp" apt-get update -qq
    chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --download-only \
        --no-install-recommends "${vm_inside_pkgs[@]}" >/dev/null
    echo "$vm_cache_id" >"$tmp/.stolon-cache"
    mv "$tmp" "$root"
}

# $vm_cache/bookworm-hosts: the cached root with vm_inside_pkgs installed (no Debian main
# PostgreSQL cluster, no service started), for the host-failure suite. Our .deb is added per run.
vm_prepare_hosts_root() {
    vm_prepare_cache
    local src=$vm_cache/$vm_suite root=$vm_cache/$vm_suite-hosts tmp=$vm_cache/$vm_suite-hosts.tmp
    local id="$vm_cache_id hosts v1"
    if [[ -f $root/.stolon-cache && $(<"$root/.stolon-cache") == "$id" ]]; then return; fi
    log "installing ${vm_inside_pkgs[*]} into $root (once)"
    rm -rf "$tmp" "$root"
    cp -a "$src" "$tmp"
    mkdir -p "$tmp/etc/postgresql-common"
    echo "create_main_cluster = false" >"$tmp/etc/postgresql-common/createcluster.conf"
    # A plain container (not booted): /proc and /dev set up, no service started (no systemd running).
    systemd-nspawn -q -D "$tmp" --register=no --keep-unit --private-network -E DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${vm_inside_pkgs[@]}" >"$vm_cache/hosts-install.log" 2>&1 </dev/null ||
        { tail -n 20 "$vm_cache/hosts-install.log" >&2; die "installing into the hosts root failed (log: $vm_cache/hosts-install.log)"; }
    chroot "$tmp" apt-get clean
    # The suite configures and starts etcd itself.
    rm -f "$tmp/etc/systemd/system/multi-user.target.wants/etcd.service"
    echo "$id" >"$tmp/.stolon-cache"
    mv "$tmp" "$root"
}
