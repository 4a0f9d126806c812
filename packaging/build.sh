#!/usr/bin/env bash
# Builds the .deb (cargo-deb) and .rpm (cargo-generate-rpm) from a release build, then lints both.
# Fails when lintian or rpmlint reports an error (warnings are printed, not fatal).
#
# Usage: packaging/build.sh [--no-build]   (--no-build: reuse target/release as it is)
# Needs: cargo-deb, cargo-generate-rpm (cargo install --locked cargo-deb cargo-generate-rpm),
#        help2man, lintian, rpmlint, clang (apt-get install help2man lintian rpmlint clang).
# Prints the package paths on its last two lines as `deb: PATH` and `rpm: PATH`.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
build=1
[[ ${1:-} == --no-build ]] && build=0

missing=()
for tool in cargo-deb cargo-generate-rpm help2man lintian rpmlint clang; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    echo "build.sh: missing ${missing[*]} (cargo install --locked cargo-deb cargo-generate-rpm;" \
        "apt-get install help2man lintian rpmlint clang)" >&2
    exit 2
fi

bins=(stolon-keeper stolon-sentinel stolon-proxy stolonctl)
if ((build)); then
    # Stripped here rather than in Cargo.toml's release profile: the .rpm ships the files as they
    # are (cargo-deb strips its own copy), and rpmlint refuses unstripped binaries. With the
    # in-kernel forwarding built in (clang compiles its eBPF program): it stays off until
    # proxy.toml turns it on with the drop-in of packaging/examples/kernel-forwarding.conf.
    CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked --bins \
        --features kernel-forwarding
fi

out=target/packaging
rm -rf "$out"
mkdir -p "$out/man/man1" "$out/rpm"

# Man pages from each binary's --help (one source of truth for the options), plus the systemd and
# file notes in packaging/man/*.h2m.
for b in "${bins[@]}"; do
    help2man --no-info --section=1 --include="packaging/man/$b.h2m" \
        --output="$out/man/man1/$b.1" "target/release/$b"
    gzip -9n "$out/man/man1/$b.1"
done

# The .rpm's example keeper points at Fedora/RHEL's PostgreSQL binaries.
sed 's|^pg-bin-path = .*|pg-bin-path = "/usr/bin"|' packaging/etc/stolon/example/keeper.toml \
    >"$out/rpm/keeper.toml"
grep -q '^pg-bin-path = "/usr/bin"$' "$out/rpm/keeper.toml"

# Not `tee /dev/stderr`: reopening stderr truncates it when it is a log file (as in CI).
cargo deb --no-build --no-strip >"$out/cargo-deb.log" 2>&1 || { cat "$out/cargo-deb.log" >&2; exit 1; }
cat "$out/cargo-deb.log" >&2
deb=$(tail -n 1 "$out/cargo-deb.log")
[[ -f $deb ]] || { echo "build.sh: cargo deb did not report a package path" >&2; exit 1; }
rm -f target/generate-rpm/*.rpm
cargo generate-rpm
rpm=$(ls target/generate-rpm/*.rpm)

fail=0
echo "== lintian $deb"
# Every tag is printed; only errors fail the build.
lintian_out=$(lintian --info --display-info --pedantic --tag-display-limit 0 "$deb" 2>&1) || true
printf '%s\n' "$lintian_out"
lintian_errors=$(grep -c '^E: ' <<<"$lintian_out" || true)
lintian_warnings=$(grep -c '^W: ' <<<"$lintian_out" || true)
echo "lintian: $lintian_errors errors, $lintian_warnings warnings"
((lintian_errors == 0)) || fail=1

echo "== rpmlint $rpm"
# packaging/rpm/rpmlint.toml: Fedora's policy, plus the two tags cargo-generate-rpm cannot set.
rpmlint_out=$(rpmlint -c packaging/rpm/rpmlint.toml "$rpm" 2>&1) && rpmlint_rc=0 || rpmlint_rc=$?
printf '%s\n' "$rpmlint_out"
# rpmlint exits non-zero when it finds errors (its summary line counts them).
rpmlint_errors=$(grep -c ': E: ' <<<"$rpmlint_out" || true)
echo "rpmlint: exit $rpmlint_rc, $rpmlint_errors errors"
((rpmlint_errors == 0 && rpmlint_rc == 0)) || fail=1

if ((fail)); then
    echo "FAIL: package lint"
    exit 1
fi
echo "PASS: package lint"
echo "deb: $deb"
echo "rpm: $repo/$rpm"
