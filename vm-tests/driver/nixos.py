"""The NixOS side of the host-failure suite: runs a scenario file of vm-tests/scenarios/ against
the QEMU machines of a NixOS VM test (nixos/tests/), with harness.Cluster's helpers and
checker.py's history checks, as vm-tests/run does against nspawn containers.

The NixOS test sets the hosts up through services.stolon in harness.py's topology (each host an
etcd member, keeper<N>, a sentinel and the socket-activated proxy; a client host) and its
testScript calls run_scenario(). What differs from the nspawn driver is only how things get onto
the hosts and off them:
  - the hosts are the test driver's own machines (start, crash, block, send_monitor_command...),
    wrapped to carry their address and keeper uid;
  - the history writer runs inside the client VM (a transient unit), and its history is copied
    out afterwards; the checker compares its acknowledgement times (the client's clock) with
    fault times taken here, so every fault time is moved onto the client's clock first;
  - the evidence (history.jsonl, verdict.json, journals, clusterdata.json) goes to the test's
    $out/<scenario>/.
"""

import importlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import checker
import harness

if TYPE_CHECKING:  # the NixOS test driver's own types (its sources are on the checker's path)
    from test_driver.machine import QemuMachine

CLIENT_DIR = "/var/lib/vmt"
# The writer's own copy of writer.py/pgwire.py in the client VM (the test puts vm-tests there).
CLIENT_SUITE = "/etc/stolon-vm-tests"
CLIENT_PASSWORD_FILE = "/run/keys/vmt-su-password"


def log(msg):
    print(f"{time.strftime('%H:%M:%S')} [vm-tests] {msg}", flush=True)


class Host:
    """A test-driver machine plus what harness.Cluster asks of a host beyond the driver's API
    (address, keeper_uid, wait_for_boot); everything else is the machine's own."""

    def __init__(self, machine: "QemuMachine", address: str, keeper_uid: str):
        self.machine = machine
        self.name = machine.name
        self.address = address
        self.keeper_uid = keeper_uid

    def __getattr__(self, attr):
        return getattr(self.machine, attr)

    def wait_for_boot(self, timeout=300):
        self.machine.wait_for_unit("multi-user.target", timeout=max(1, int(timeout)))


class NixosCluster(harness.Cluster):
    """harness.Cluster on NixOS test machines: the scenarios' `t`. The hosts are configured by
    the NixOS test itself, so there is no configure(); boot() starts them."""

    def __init__(self, name, hosts, client, client_address, outdir, replication,
                 profile="default"):
        # Not harness.Cluster.__init__: that one builds nspawn hosts and a bridge.
        self.name = name
        self.store_endpoints = "all"
        self.outdir = Path(outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.workdir = self.outdir
        self.replication = replication
        self.profile = profile
        self.spec_profile = harness.PROFILES[profile]
        self.sleep_interval = harness.seconds(self.spec_profile["sleepInterval"])
        self.fail_interval = harness.seconds(self.spec_profile["failInterval"])
        self.log = log
        self.faults = []
        self.hosts = hosts
        self.client = client
        self.client_address = client_address
        self.writer = None
        self.writer_stopped = None
        self.load = []
        self.history = self.outdir / "history.jsonl"

    # ---- the client's clock -----------------------------------------------------------------
    def client_offset(self):
        """client clock - this clock, measured around one `date` on the client."""
        before = time.time()
        remote = float(self.client.succeed("date +%s.%N").strip())
        after = time.time()
        return remote - (before + after) / 2

    def fault(self, kind, **extra):
        f = super().fault(kind, **extra)
        # The checker reads fault times on the writer's (the client's) clock.
        f["at"] += self.client_offset()
        return f

    # ---- set-up -----------------------------------------------------------------------------
    def boot(self, timeout=600):
        for h in self.hosts:
            h.start()
        self.client.start()
        self.log("hosts started; waiting for the cluster")
        self.wait_converged(timeout)
        self.check_spec()

    def check_spec(self):
        """The cluster spec the NixOS test rendered is the one this scenario and profile need."""
        cd = self.clusterdata() or {}
        spec = cd.get("cluster", {}).get("spec", {})
        want = {**self.spec_profile, "synchronousReplication": self.replication == "sync"}
        wrong = {k: (spec.get(k), v) for k, v in want.items() if spec.get(k) != v}
        if wrong:
            raise harness.ScenarioFailed(f"cluster spec differs from the scenario's (have, want): {wrong}")

    # ---- the history writer, in the client VM -------------------------------------------------
    def start_writer(self):
        m = self.master()
        self.psql(m, "CREATE TABLE IF NOT EXISTS history(id bigint PRIMARY KEY, target text, "
                     "sent double precision)")
        targets = [f"proxy-{h.name}={h.address}:{harness.PROXY_PORT}" for h in self.hosts]
        targets += [f"pg-{h.name}={h.address}:{harness.PG_PORT}" for h in self.hosts]
        self.client.succeed(
            f"mkdir -p {CLIENT_DIR} && rm -f {CLIENT_DIR}/history.jsonl",
            # systemd-run is given python3's absolute path: the manager's PATH has no profile.
            "systemd-run --unit=vmt-writer --property=KillSignal=SIGTERM "
            f'"$(command -v python3)" {CLIENT_SUITE}/writer.py --out {CLIENT_DIR}/history.jsonl '
            f"--password-file {CLIENT_PASSWORD_FILE} " + " ".join(targets))
        self.writer = "vmt-writer.service"
        self.log("writer started on the client")

    def stop_writer(self):
        if self.writer is None:
            return
        self.writer_stopped = time.time() + self.client_offset()
        self.client.execute("systemctl stop vmt-writer.service", timeout=30)
        self.writer = None
        # To $out/<scenario>/history.jsonl, where acks() reads it.
        self.client.copy_from_machine(f"{CLIENT_DIR}/history.jsonl", self.outdir.name)

    def start_load(self, seconds, rate, clients=2, scale=2):
        raise harness.ScenarioFailed("the load of `steady` is not run by the NixOS tests")

    # ---- checks beyond the history -------------------------------------------------------------
    def check_rows_everywhere(self, timeout=120):
        """After the scenario: one more row through every proxy, then every PostgreSQL (the
        standbys too, the host that crashed or was cut off included) holds every row the master
        holds."""
        for i, h in enumerate(self.hosts):
            marker = 9 * 10**12 + i
            self.psql(h, f"INSERT INTO history(id, target, sent) VALUES ({marker}, 'final-{h.name}', 0)",
                      target=(h.address, harness.PROXY_PORT))
        want = len(self.final_ids())
        deadline = time.time() + timeout
        for h in self.hosts:
            while True:
                have = int(self.psql(h, "SELECT count(*) FROM history").strip())
                if have == want:
                    break
                if time.time() > deadline:
                    raise harness.ScenarioFailed(
                        f"{h.name}'s PostgreSQL holds {have} rows, the master {want}")
                time.sleep(1)
        self.log(f"every PostgreSQL holds the master's {want} rows")

    def proxies_served_after_faults(self, acks):
        """Reasons to fail: a proxy that acknowledged no write after the last fault."""
        since = max((f["at"] for f in self.faults), default=0.0)
        return [f"no write acknowledged through proxy-{h.name} after the last fault"
                for h in self.hosts
                if not any(a["target"] == f"proxy-{h.name}" and a["ack"] > since for a in acks)]

    # ---- evidence -----------------------------------------------------------------------------
    def save_journals(self):
        for h in self.hosts:
            if h.is_up():
                rc, out = h.execute("journalctl --no-pager -o short-precise", timeout=120)
                (self.outdir / f"journal-{h.name}.log").write_text(out)
        cd = self.clusterdata()
        if cd:
            (self.outdir / "clusterdata.json").write_text(json.dumps(cd, indent=1))

    def destroy(self):
        self.stop_writer()


def run_scenario(name: str, hosts: "list[QemuMachine]", client: "QemuMachine",
                 addresses: dict[str, str], profile: str = "default") -> dict:
    """Runs scenarios/<name>.py as vm-tests/run does (boot, writer, fault, converge, checks) on
    the NixOS test's machines; raises harness.ScenarioFailed with every reason when it fails.
    `hosts` are host1..host3, `addresses` maps each machine name (and "client") to its address.
    Returns the result (also in $out/<name>/result.json)."""
    mod = importlib.import_module(f"scenarios.{name}")
    outdir = Path(client.out_dir) / name
    wrapped = [Host(m, addresses[m.name], f"keeper{i}") for i, m in enumerate(hosts, 1)]
    t = NixosCluster(name, wrapped, client, addresses["client"], outdir, mod.REPLICATION, profile)
    started = time.time()
    result: dict = {"name": name, "passed": False, "replication": mod.REPLICATION, "profile": profile}
    try:
        t.boot()
        t.start_writer()
        t.sleep(5)
        log(f"{name}: run")
        mod.run(t)
        t.wait_converged()
        t.sleep(3)
        # Writes on the healed cluster, through every proxy.
        t.sleep(5)
        t.stop_writer()
        acks = t.acks()
        verdict = checker.check(acks, t.faults, t.final_ids(), mod.REPLICATION,
                                harness.MAX_STANDBY_LAG, t.writer_stopped)
        verdict["reasons"] += t.proxies_served_after_faults(acks)
        t.check_rows_everywhere()
        (outdir / "verdict.json").write_text(json.dumps(verdict, indent=1))
        result.update({k: verdict[k] for k in ("failover_seconds", "acknowledged_writes",
                                              "lost_acknowledged_writes", "dual_master_windows",
                                              "failovers", "reasons")})
        result["passed"] = not verdict["reasons"]
    finally:
        try:
            t.save_journals()
        except Exception as e:  # the scenario's own error matters more
            log(f"{name}: journals not saved: {e}")
        t.destroy()
        result["seconds"] = round(time.time() - started, 1)
        (outdir / "result.json").write_text(json.dumps(result, indent=1))
    log(f"{name}: {json.dumps(result)}")
    if not result["passed"]:
        raise harness.ScenarioFailed(f"{name}: " + "; ".join(result["reasons"]))
    return result
