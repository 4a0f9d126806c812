#!/usr/bin/env bash
# Checks the shipped unit files (systemd/) without installing anything:
#   1. `systemd-analyze verify` on every unit, instantiated for a demo cluster, with the ExecStart
#      binaries resolvable at their real /usr/bin paths;
#   2. `systemd-analyze security --offline=true` exposure of the three services, failing when one
#      is over its limit (proxy, sentinel <= 2.0; keeper <= 3.0).
#
# Usage: vm-tests/verify-units.sh [BIN_DIR]
#   BIN_DIR holds stolon-keeper, stolon-sentinel, stolon-proxy (default: target/release, else
#   target/debug). As root, BIN_DIR is overlaid on /usr/bin inside a private mount namespace
#   (the host is not changed) so the units are verified exactly as shipped. Not as root, the units
#   are verified from a copy whose ExecStart paths point into BIN_DIR.
# Env: MAN_DIR=<dir with man1/> makes verify also check the Documentation=man: pages.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
units_src="$repo/systemd"
instance=demo
limits=("stolon-proxy@$instance.service 2.0" "stolon-sentinel@$instance.service 2.0"
    "stolon-keeper@$instance.service 3.0")
units=("stolon-keeper@$instance.service" "stolon-sentinel@$instance.service"
    "stolon-proxy@$instance.service" "stolon-proxy@$instance.socket"
    "stolon-proxy-read-only@$instance.socket" "stolon@$instance.target")
bins=(stolon-keeper stolon-sentinel stolon-proxy)

bin_dir=${1:-}
if [[ -z $bin_dir ]]; then
    for d in "$repo/target/release" "$repo/target/debug"; do
        if [[ -x $d/stolon-keeper ]]; then bin_dir=$d; break; fi
    done
fi
if [[ -z $bin_dir ]]; then
    echo "verify-units: no built binaries (run cargo build, or pass BIN_DIR)" >&2
    exit 2
fi
bin_dir=$(cd "$bin_dir" && pwd)
for b in "${bins[@]}"; do
    [[ -x $bin_dir/$b ]] || { echo "verify-units: $bin_dir/$b missing" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/units" "$work/bin"
cp "$units_src"/* "$work/units/"
# Only our binaries go into the overlay's upper layer: nothing else in /usr/bin is shadowed.
for b in "${bins[@]}"; do cp "$bin_dir/$b" "$work/bin/$b"; done

man_opt=(--man=no)
if [[ -n ${MAN_DIR:-} ]]; then man_opt=(--man=yes); export MANPATH="$MAN_DIR:"; fi

# A trailing ':' keeps the default unit path, so sysinit.target, network-online.target ... resolve.
export SYSTEMD_UNIT_PATH="$work/units:"
fail=0

echo "== systemd-analyze verify (binaries from $bin_dir)"
if [[ $(id -u) -eq 0 ]] && unshare -m true 2>/dev/null; then
    verify_out=$(unshare -m --propagation private bash -c '
        mount -t overlay overlay -o "lowerdir=$1:/usr/bin" /usr/bin || exit 90
        shift; exec systemd-analyze verify "$@"' _ "$work/bin" "${man_opt[@]}" "${units[@]}" 2>&1) \
        && rc=0 || rc=$?
    if [[ $rc -eq 90 ]]; then echo "verify-units: cannot overlay /usr/bin" >&2; exit 2; fi
else
    sed -i "s|/usr/bin/stolon-|$work/bin/stolon-|" "$work/units"/*.service
    verify_out=$(systemd-analyze verify "${man_opt[@]}" "${units[@]}" 2>&1) && rc=0 || rc=$?
fi
# verify prints nothing when all is well; any line is a finding worth failing on.
if [[ $rc -ne 0 || -n $verify_out ]]; then
    printf '%s\n' "$verify_out"
    echo "FAIL: systemd-analyze verify (exit $rc)"
    fail=1
else
    echo "PASS: systemd-analyze verify: ${units[*]}"
fi

echo "== systemd-analyze security --offline=true"
for entry in "${limits[@]}"; do
    read -r unit limit <<<"$entry"
    out=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1) || true
    score=$(sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p' <<<"$out")
    if [[ -z $score ]]; then
        printf '%s\n' "$out"
        echo "FAIL: $unit: no exposure score"
        fail=1
    elif awk -v s="$score" -v l="$limit" 'BEGIN { exit !(s <= l) }'; then
        echo "PASS: $unit exposure $score (limit $limit)"
    else
        grep '^✗' <<<"$out" || true
        echo "FAIL: $unit exposure $score (limit $limit)"
        fail=1
    fi
done
exit $fail
