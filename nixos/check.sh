#!/usr/bin/env bash
# SC2016: the `sh -c '...'` scripts get their arguments as $0 and $@ on purpose.
# SC2329: the functions are run through check().
# shellcheck disable=SC2016,SC2329
# Offline checks of the Nix side (flake, package, services.stolon module, NixOS VM tests). Nothing
# is built and no VM runs: without a binary cache nothing from nixpkgs can be built here. These
# checks prove that everything evaluates, that the module renders the shipped units and valid
# config files, and that the VM tests' scripts type-check as nixpkgs' driver checks them.
#
# Usage: nixos/check.sh                          parse every .nix file, compare nixos/flags.nix
#                                                with src/config/flags.rs (CI: needs only nix-bin)
#        NIXPKGS_PATH=<tree> nixos/check.sh      everything (see nixos/README.md for the tree)
# Needs: nix-instantiate (apt-get install nix-bin), python3 >= 3.11; with NIXPKGS_PATH also
# systemd-analyze and PyPI (ty and ruff, at the versions of the tree, go into a venv:
# STOLON_NIX_VENV, default target/nix-venv).
# Prints one line per check, then `N passed, N failed`; exits 1 when any failed.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 2
# No binary cache (every command would first try cache.nixos.org) and no sandbox (single-user
# store as root in a container).
export NIX_CONFIG=$'substituters =\nsandbox = false'${NIX_CONFIG:+$'\n'$NIX_CONFIG}
nixflakes=(nix --extra-experimental-features 'nix-command flakes')

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
T0=$(date +%s%N)

# Seconds since $1 (date +%s%N), one decimal.
since() { local ms=$((($(date +%s%N) - $1) / 1000000)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }

# check NAME COMMAND...: runs COMMAND, prints PASS/FAIL with its time, and its output on failure.
check() {
    local name=$1 start rc
    shift
    start=$(date +%s%N)
    "$@" >"$work/out" 2>&1
    rc=$?
    if ((rc == 0)); then
        passed=$((passed + 1))
        printf 'PASS  %-58s %6ss\n' "$name" "$(since "$start")"
    else
        failed=$((failed + 1))
        printf 'FAIL  %-58s %6ss\n' "$name" "$(since "$start")"
        grep -v "did not specify '--add-root'" "$work/out" | tail -n 40 | sed 's/^/      /'
    fi
}

summary() {
    echo "total $(since "$T0")s"
    echo "$passed passed, $failed failed"
    ((failed == 0))
    exit $?
}

json() { python3 -c 'import json,sys; sys.stdout.write(json.load(sys.stdin))'; }

# ---- always (CI) ----------------------------------------------------------------------------
command -v nix-instantiate >/dev/null || {
    echo "nix-instantiate not found: apt-get install nix-bin" >&2
    exit 2
}
mapfile -t nixfiles < <(git ls-files --cached --others --exclude-standard '*.nix')
check "parse ${#nixfiles[@]} .nix files" nix-instantiate --parse "${nixfiles[@]}"
check "nixos/flags.nix = src/config/flags.rs" sh -c \
    'nix-instantiate --eval --strict --json nixos/flags.nix > "$1" && python3 nixos/check_eval.py flags "$1"' \
    _ "$work/flags.json"
check "vm-tests/driver/nixos.py parses" python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' vm-tests/driver/nixos.py

if [ -z "${NIXPKGS_PATH:-}" ]; then
    echo "NIXPKGS_PATH unset: NixOS evaluation skipped (module, VM tests, test scripts, flake)"
    summary
fi

# ---- with a nixpkgs tree --------------------------------------------------------------------
tree=$(cd "$NIXPKGS_PATH" && pwd)
checks=(nix-instantiate nix/checks.nix --arg nixpkgs "$tree")
evaljson() { "${checks[@]}" --eval --strict --json "$@"; }

# The module, evaluated in a NixOS configuration (nix/checks.nix's example host).
check "module: units = systemd/ (ExecStart, creds, hardening)" sh -c \
    '"$@" -A units > "$0" && python3 nixos/check_eval.py units "$0"' \
    "$work/units.json" "${checks[@]}" --eval --strict --json
check "module: keeper/sentinel/proxy/stolonctl TOML, spec" sh -c \
    '"$@" -A configFiles > "$0" && python3 nixos/check_eval.py configs "$0"' \
    "$work/configs.json" "${checks[@]}" --eval --strict --json
check "module: firewall, tmpfiles, postgres user" sh -c \
    '"$@" -A host > "$0" && python3 nixos/check_eval.py host "$0"' \
    "$work/host.json" "${checks[@]}" --eval --strict --json
if command -v systemd-analyze >/dev/null; then
    check "module: systemd-analyze security <= shipped" python3 nixos/check_eval.py exposure "$work/units.json"
else
    echo "SKIP  systemd-analyze security (no systemd-analyze)"
fi
check "module: host toplevel instantiates, no warning" sh -c \
    '"$@" -A toplevel > "$0" 2>&1; rc=$?; cat "$0"; [ $rc = 0 ] && ! grep -i "warning: .*evaluation warning\|^trace: " "$0"' \
    "$work/toplevel.log" "${checks[@]}"

# Deliberately wrong configurations: each must fail evaluation with its own message.
evaljson -A negativeCases >"$work/negatives.json" 2>"$work/negatives.err" || cat "$work/negatives.err"
negative() {
    local case=$1 expect=$2
    if "${checks[@]}" --argstr case "$case" -A negative >"$work/neg.out" 2>&1; then
        echo "the configuration '$case' evaluated; it must fail with: $expect"
        return 1
    fi
    grep -F -- "$expect" "$work/neg.out" >/dev/null || {
        echo "failed without the expected message '$expect':"
        tail -n 15 "$work/neg.out"
        return 1
    }
    grep -F -- "$expect" "$work/neg.out" | head -n 1 | cut -c1-200
}
while IFS=$'\t' read -r case expect; do
    check "negative: $case" negative "$case" "$expect"
done < <(python3 -c 'import json,sys; [print(f"{k}\t{v}") for k, v in json.load(open(sys.argv[1])).items()]' \
    "$work/negatives.json")

# The VM tests: each instantiated to a .drv, and its script type-checked and linted as nixpkgs'
# driver does before running it (ty check, ruff check --select F) against the driver's sources.
venv=${STOLON_NIX_VENV:-$repo/target/nix-venv}
ver() { sed -n 's/^  version = "\(.*\)";/\1/p' "$tree/pkgs/by-name/$1/package.nix" | head -n 1; }
ty_version=$(ver ty/ty)
ruff_version=$(ver ru/ruff)
setup_venv() {
    [ -x "$venv/bin/ty" ] && [ "$("$venv/bin/ty" --version | cut -d' ' -f2)" = "$ty_version" ] &&
        [ "$("$venv/bin/ruff" --version | cut -d' ' -f2)" = "$ruff_version" ] && return 0
    python3 -m venv "$venv" &&
        "$venv/bin/pip" install -q "ty==$ty_version" "ruff==$ruff_version" \
            colorama ipython junit-xml ptpython pydantic remote-pdb typing_extensions
}
check "venv: ty $ty_version, ruff $ruff_version (nixpkgs' versions)" setup_venv
driver_src=$tree/nixos/lib/test-driver/src
typecheck() {
    "$venv/bin/ty" check --python "$venv" --python-version 3.13 \
        --extra-search-path "$driver_src" --extra-search-path "$repo/vm-tests" "$1" &&
        "$venv/bin/ruff" check --select F --no-cache "$1"
}
script_check() {
    evaljson -A "testScripts.$1" | json >"$work/$1.py" && typecheck "$work/$1.py"
}
mapfile -t tests < <(evaljson -A testNames | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)))')
for t in "${tests[@]}"; do
    check "vm test $t: instantiate .drv" sh -c '"$@" > "$0"' "$work/drv-$t" "${checks[@]}" -A "vmTests.$t"
    check "vm test $t: test script ty + ruff" script_check "$t"
done
check "vm-tests/driver/nixos.py ty + ruff" typecheck vm-tests/driver/nixos.py

# The flake, with nixpkgs overridden by the tree (no GitHub here): every output evaluated.
flake=(--no-write-lock-file --override-input nixpkgs "path:$tree")
check "nix flake check --no-build" "${nixflakes[@]}" flake check --no-build "${flake[@]}"
check "flake: checks = VM tests, src without target/" sh -c \
    '"$@" > "$0" && python3 nixos/check_eval.py flake "$0" "$(dirname "$0")"' \
    "$work/flake.json" "${nixflakes[@]}" eval --json "${flake[@]}" .#checks.x86_64-linux \
    --apply 'cs: { drvs = builtins.mapAttrs (n: c: c.drvPath) cs; src = "${cs.stolon.src}"; }'

summary
