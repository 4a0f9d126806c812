#!/usr/bin/env python3
"""Checks of nixos/check.sh that read what Nix evaluated (JSON on stdin or in files) and compare it
with the sources of truth in this repository: the shipped units (systemd/) and the flag tables
(src/config/flags.rs). Standard library only.

  check_eval.py flags FLAGS_NIX_JSON          nixos/flags.nix lists exactly the flags of flags.rs
  check_eval.py units UNITS_JSON              the module's units are the shipped ones (see units())
  check_eval.py configs CONFIGS_JSON          the rendered TOML/JSON files load and use known keys
  check_eval.py exposure UNITS_JSON           systemd-analyze security: NixOS units no worse
  check_eval.py host HOST_JSON                firewall, tmpfiles, postgres user of the example host
  check_eval.py flake FLAKE_JSON DRV_DIR      flake checks = nix/checks.nix's tests; package source
Exits 1 with the reasons on stderr when a check fails.
"""

import json
import re
import subprocess
import sys
import tempfile
import tomllib
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLUSTER = "main"  # the example cluster of nix/checks.nix


def fail(reasons):
    for r in reasons:
        print(f"  {r}", file=sys.stderr)
    sys.exit(1 if reasons else 0)


# ---- flags ------------------------------------------------------------------------------------
def rust_flags():
    """Role -> the keys its TOML file accepts, from src/config/flags.rs: each flag a named
    constant (`const STORE_KEY: FlagDef = text("store-key", ...)`, maybe inside hidden(...)), each
    table (`const KEEPER_FLAGS: &[&FlagDef] = &[&UID, ...]`) a list of them, put together per role
    as Role::flags does (common + daemon + the role's own)."""
    src = (REPO / "src/config/flags.rs").read_text()
    consts = dict(re.findall(
        r'const (\w+): FlagDef\s*=\s*(?:hidden\(\s*)?(?:text|boolean)\(\s*"([a-z0-9-]+)"', src))
    tables = {}
    for m in re.finditer(r"const (\w+)_FLAGS: &\[&FlagDef\]\s*=\s*&\[(.*?)\];", src, re.S):
        refs = re.findall(r"&(\w+)", m.group(2))
        unknown = [r for r in refs if r not in consts]
        if unknown:
            raise SystemExit(f"flags.rs: {m.group(1)}_FLAGS names unknown constants {unknown}")
        tables[m.group(1)] = [consts[r] for r in refs]
    if set(tables) != {"COMMON", "DAEMON", "CTL", "KEEPER", "SENTINEL", "PROXY"}:
        raise SystemExit(f"flags.rs: unexpected flag tables {sorted(tables)} (has the format changed?)")
    common = [f for f in tables["COMMON"] if f != "config"]  # the file cannot name itself
    daemon = common + tables["DAEMON"]
    return {"keeper": daemon + tables["KEEPER"], "sentinel": daemon + tables["SENTINEL"],
            "proxy": daemon + tables["PROXY"], "stolonctl": common + tables["CTL"]}


def check_flags(path):
    nix = json.loads(Path(path).read_text())
    rust = rust_flags()
    reasons = []
    for role in sorted(set(nix) | set(rust)):
        a, b = set(nix.get(role, [])), set(rust.get(role, []))
        if a != b:
            reasons.append(f"{role}: only in nixos/flags.nix {sorted(a - b)}, only in flags.rs {sorted(b - a)}")
    fail(reasons)


# ---- units ------------------------------------------------------------------------------------
def parse_unit(text):
    """(section, key) -> [values], as systemd reads it (repeated keys keep every value)."""
    out, section = defaultdict(list), ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, v = line.split("=", 1)
        out[(section, k)].append(v)
    return out


def words(values):
    return sorted(w for v in values for w in v.split())


# Keys whose values the module changes on purpose (module.nix's header lists why).
CHANGED = {("Service", "ExecStart"), ("Service", "ExecReload"), ("Service", "LoadCredential"),
           ("Socket", "ListenStream")}
# Keys NixOS adds to every unit, or the module adds, that do not weaken anything.
ADDED = {("Service", "Environment"), ("Unit", "X-Restart-Triggers"), ("Socket", "FreeBind")}
HARDENING = ["NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
             "RestrictAddressFamilies", "SystemCallFilter", "CapabilityBoundingSet", "UMask"]


def check_units(path):
    rendered = json.loads(Path(path).read_text())
    shipped_files = {"keeper": "stolon-keeper@.service", "sentinel": "stolon-sentinel@.service",
                     "proxy": "stolon-proxy@.service", "socket": "stolon-proxy@.socket",
                     "readOnlySocket": "stolon-proxy-read-only@.socket", "target": "stolon@.target"}
    reasons = []
    pkg = None
    for role, fname in shipped_files.items():
        text = (REPO / "systemd" / fname).read_text().replace("%i", CLUSTER)
        want, have = parse_unit(text), parse_unit(rendered[role])
        where = f"{role} ({fname})"
        for key, values in want.items():
            if key == ("Install", "WantedBy"):
                continue  # NixOS makes the links instead; wantedBy is checked below
            got = have.get(key)
            if got is None:
                reasons.append(f"{where}: {key[0]}.{key[1]} missing")
            elif key in CHANGED:
                continue
            elif key[1] in ("After", "Wants", "Before", "PartOf", "Requires"):
                extra = set(words(got)) - set(words(values)) - {"network-online.target"}
                if set(words(values)) - set(words(got)) or extra:
                    reasons.append(f"{where}: {key[1]} {words(got)} != shipped {words(values)}")
            elif got != values:
                reasons.append(f"{where}: {key[0]}.{key[1]} = {got}, shipped {values}")
        for key in have.keys() - want.keys() - ADDED:
            if key[0] != "Install":
                reasons.append(f"{where}: {key[0]}.{key[1]} = {have[key]} is not in the shipped unit")
        if role in ("keeper", "sentinel", "proxy"):
            exe = have[("Service", "ExecStart")][0]
            m = re.match(r"(/nix/store/[a-z0-9]{32}-stolon-[^/]+)/bin/(\S+) (.*)", exe)
            shipped_exe = want[("Service", "ExecStart")][0]
            if not m:
                reasons.append(f"{where}: ExecStart does not run a stolon binary from the store: {exe}")
                continue
            pkg = m.group(1)
            # The shipped command line, then only additions (the store key credential here).
            if f"/usr/bin/{m.group(2)} {m.group(3)}".split()[:len(shipped_exe.split())] != shipped_exe.split():
                reasons.append(f"{where}: ExecStart {exe!r} does not start with the shipped {shipped_exe!r}")
            # The shipped credentials, in order, those given as files taken from them.
            given = {"store-key": "/run/keys/etcd-client.key",
                     "pg-su-password": "/run/keys/stolon-su-password",
                     "pg-repl-password": "/run/keys/stolon-repl-password"}
            expected = [f"{n}:{given[n]}" if n in given else f"{n}:{src}"
                        for n, src in (e.split(":", 1) for e in want[("Service", "LoadCredential")])]
            creds = have[("Service", "LoadCredential")]
            if creds != expected:
                reasons.append(f"{where}: LoadCredential {creds}, expected {expected}")
            reload = have[("Service", "ExecReload")][0]
            if not re.fullmatch(r"/nix/store/\S+/bin/kill -HUP \$MAINPID", reload):
                reasons.append(f"{where}: ExecReload {reload!r}")
            for k in HARDENING:
                if have.get(("Service", k)) != want.get(("Service", k)):
                    reasons.append(f"{where}: hardening {k} differs")
            if have.get(("Service", "Type")) != ["notify"] or not have.get(("Service", "WatchdogSec")):
                reasons.append(f"{where}: not Type=notify with a watchdog")
    keeper = parse_unit(rendered["keeper"])
    if keeper[("Service", "User")] != ["postgres"] or keeper[("Service", "StateDirectory")] != [f"stolon/{CLUSTER}"]:
        reasons.append("keeper: not user postgres with StateDirectory stolon/main")
    if f"--data-dir /var/lib/stolon/{CLUSTER}" not in keeper[("Service", "ExecStart")][0]:
        reasons.append("keeper: --data-dir is not /var/lib/stolon/main")
    socket = parse_unit(rendered["socket"])
    if socket[("Socket", "ListenStream")] != ["192.0.2.11:25432"]:
        reasons.append(f"socket: ListenStream {socket[('Socket', 'ListenStream')]}")
    read_only = parse_unit(rendered["readOnlySocket"])
    if read_only[("Socket", "ListenStream")] != ["192.0.2.11:25431"]:
        reasons.append(f"readOnlySocket: ListenStream {read_only[('Socket', 'ListenStream')]}")
    # Socket activation off: no socket in the proxy's or the target's dependencies.
    for role in ("proxyNoSocket", "targetNoSocket"):
        if ".socket" in rendered[role]:
            reasons.append(f"{role}: still refers to a socket unit")
    if "store-key:/run" in rendered["proxyNoSocket"]:
        reasons.append("proxyNoSocket: a store key file without store.keyFile")
    print(f"units of {pkg}: {len(shipped_files)} compared with systemd/")
    fail(reasons)


# ---- rendered configuration files -------------------------------------------------------------
def check_configs(path):
    files = json.loads(Path(path).read_text())
    flags = rust_flags()
    reasons = []
    for name, role in (("keeper", "keeper"), ("sentinel", "sentinel"), ("proxy", "proxy"),
                       ("stolonctl", "stolonctl"), ("reportingProxy", "proxy")):
        try:
            table = tomllib.loads(files[name])
        except tomllib.TOMLDecodeError as e:
            reasons.append(f"{name}: not TOML: {e}")
            continue
        for k, v in table.items():
            if k not in flags[role] and not (role == "stolonctl" and k == "cluster-name"):
                reasons.append(f"{name}: key {k} is not a stolon-{role} flag")
            ok = isinstance(v, (str, int, bool)) or (isinstance(v, list) and all(isinstance(i, str) for i in v))
            if not ok:
                reasons.append(f"{name}: {k} = {v!r} is not a string, integer, boolean or list of strings")
        if role != "stolonctl" and "cluster-name" in table:
            reasons.append(f"{name}: cluster-name is the unit's (the instance name)")
    keeper = tomllib.loads(files["keeper"])
    expect = {"uid": "keeper1", "pg-listen-address": "192.0.2.11", "pg-port": 5432,
              "pg-su-auth-method": "scram-sha-256", "log-level": "debug",
              "store-endpoints": ["https://192.0.2.11:2379", "https://192.0.2.12:2379", "https://192.0.2.13:2379"],
              "store-ca-file": "/etc/ssl/etcd/ca.pem"}
    for k, v in expect.items():
        if keeper.get(k) != v:
            reasons.append(f"keeper.toml: {k} = {keeper.get(k)!r}, expected {v!r}")
    if not re.fullmatch(r"/nix/store/[a-z0-9]{32}-postgresql-[^/]+/bin", keeper.get("pg-bin-path", "")):
        reasons.append(f"keeper.toml: pg-bin-path {keeper.get('pg-bin-path')!r}")
    if any("password" in k and not k.endswith("auth-method") and not k.endswith("username") for k in keeper):
        reasons.append("keeper.toml: holds a password setting (it must come as a credential)")
    sentinel = tomllib.loads(files["sentinel"])
    if sentinel.get("initial-cluster-spec") != "/etc/stolon/main/cluster-spec.json":
        reasons.append(f"sentinel.toml: initial-cluster-spec {sentinel.get('initial-cluster-spec')!r}")
    if json.loads(files["spec"]) != {"initMode": "new", "synchronousReplication": True}:
        reasons.append(f"cluster-spec.json: {files['spec']!r}")
    if tomllib.loads(files["stolonctl"]).get("cluster-name") != "main":
        reasons.append("stolonctl.toml: cluster-name is not main")
    # Read-only listener: main's comes as a socket unit, reporting's (no socket activation) as
    # the proxy's own port, with the fallback.
    proxy = tomllib.loads(files["proxy"])
    if any(k.startswith("read-only") for k in proxy):
        reasons.append(f"proxy.toml: read-only settings with socket activation: {proxy}")
    reporting = tomllib.loads(files["reportingProxy"])
    expect = {"read-only-port": 25441, "read-only-fallback-master": True}
    for k, v in expect.items():
        if reporting.get(k) != v:
            reasons.append(f"reporting proxy.toml: {k} = {reporting.get(k)!r}, expected {v!r}")
    fail(reasons)


# ---- systemd-analyze security ------------------------------------------------------------------
def exposure(path):
    out = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    if not m:
        raise SystemExit(f"systemd-analyze security {path}: no exposure level:\n{out[-1000:]}")
    return float(m.group(1))


def check_exposure(units_json):
    """The units of units_json (nix/checks.nix's `units`) written out as files and scored."""
    rendered = json.loads(Path(units_json).read_text())
    tmp = Path(tempfile.mkdtemp())
    reasons = []
    for role in ("keeper", "sentinel", "proxy"):
        unit = tmp / f"stolon-{role}@{CLUSTER}.service"
        unit.write_text(rendered[role])
        shipped = exposure(REPO / f"systemd/stolon-{role}@.service")
        nixos = exposure(unit)
        print(f"{role}: exposure {nixos} on NixOS, {shipped} shipped")
        if nixos > shipped:
            reasons.append(f"{role}: exposure {nixos} on NixOS is worse than the shipped unit's {shipped}")
    fail(reasons)


# ---- the rest of the example host -----------------------------------------------------------------
def check_host(path):
    got = json.loads(Path(path).read_text())
    reasons = []
    if sorted(got["firewall"]) != [5432, 25431, 25432]:
        reasons.append(f"firewall ports {got['firewall']}: expected main's keeper and proxy (both listeners) only")
    if "d /var/lib/stolon 0750 postgres postgres -" not in got["tmpfiles"]:
        reasons.append(f"tmpfiles rules {got['tmpfiles']} lack packaging/tmpfiles.d's /var/lib/stolon")
    if got["postgresUser"] != {"uid": 71, "group": "postgres"}:
        reasons.append(f"postgres user {got['postgresUser']}: expected NixOS's fixed uid 71")
    fail(reasons)


# ---- the flake ----------------------------------------------------------------------------------
def check_flake(path, drv_dir):
    """The flake's checks are nix/checks.nix's VM tests (same .drv) plus the package, and the
    package's source is only what the build reads (no target/, no .git)."""
    got = json.loads(Path(path).read_text())
    reasons = []
    drvs = got["drvs"]
    for name, drv in drvs.items():
        f = Path(drv_dir) / f"drv-{name}"
        if f.exists() and f.read_text().split()[-1] != drv:
            reasons.append(f"checks.{name}: {drv} (flake) != {f.read_text().split()[-1]} (nix/checks.nix)")
    if not {"failover", "partition", "stolon"} <= set(drvs):
        reasons.append(f"checks: {sorted(drvs)}")
    top = {p.name for p in Path(got["src"]).iterdir()}
    if not {"Cargo.lock", "Cargo.toml", "src", "systemd", "packaging"} <= top:
        reasons.append(f"package source lacks files the build needs: {sorted(top)}")
    if top & {"target", ".git", "vm-tests", "nixos", "flake.nix"}:
        reasons.append(f"package source holds more than the build reads: {sorted(top)}")
    print(f"{len(drvs)} checks ({', '.join(sorted(drvs))}); package source {got['src']}: {sorted(top)}")
    fail(reasons)


if __name__ == "__main__":
    {"flags": check_flags, "units": check_units, "configs": check_configs,
     "exposure": check_exposure, "host": check_host,
     "flake": check_flake}[sys.argv[1]](*sys.argv[2:])
