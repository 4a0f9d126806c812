"""The cluster the scenarios run against, and the helpers they use (`t` in every scenario).

Topology: host1..host3, each one etcd member (a static 3-member cluster), one keeper (uid
keeper<N>), one sentinel and the socket-activated proxy on <address>:25432, all from our .deb's
units (`stolon@vmt.target`, enabled so they come back at boot); PostgreSQL listens on
<address>:5433. A client host (the `client` namespace, same bridge) runs the history writer
through each proxy and directly against each PostgreSQL.

Scenarios only use the NixOS test driver's machine API on `t.hosts` plus the helpers below
(which themselves only use that API), so the NixOS VM tests can run the same files.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from driver.nspawn import Machine, MachineError, Switch, run  # noqa: E402

CLUSTER = "vmt"
PG_PORT = 5433
PROXY_PORT = 25432
SU_PASSWORD = "vmt-su-secret"
REPL_PASSWORD = "vmt-repl-secret"
KEEPER_UNIT = f"stolon-keeper@{CLUSTER}.service"
HOST_UNITS = ["etcd.service", KEEPER_UNIT, f"stolon-sentinel@{CLUSTER}.service",
              f"stolon-proxy@{CLUSTER}.socket"]
PROFILES = {
    # The figures: sleepInterval 2s / failInterval 5s by default, 1s / 2s when fast.
    # proxyTimeout bounds how long a master change waits for a proxy on a dead host.
    "default": {"sleepInterval": "2s", "failInterval": "5s",
                "proxyCheckInterval": "1s", "proxyTimeout": "5s"},
    "fast": {"sleepInterval": "1s", "failInterval": "2s",
             "proxyCheckInterval": "500ms", "proxyTimeout": "2s"},
}
MAX_STANDBY_LAG = 1024 * 1204  # the project's default maxStandbyLag (bytes)


def seconds(go_duration):
    assert go_duration.endswith("s")
    return float(go_duration[:-1])


class ScenarioFailed(Exception):
    pass


class Cluster:
    def __init__(self, name, tag, lower_dirs, workdir, outdir, replication, profile, log,
                 store_endpoints="all"):
        self.name = name
        # "all": every role lists the three etcd members (the usual set-up), its own first;
        # "local": only its own host's member.
        self.store_endpoints = store_endpoints
        self.tag = tag
        self.workdir = Path(workdir)
        self.outdir = Path(outdir)
        self.replication = replication
        self.profile = profile
        self.spec_profile = PROFILES[profile]
        self.sleep_interval = seconds(self.spec_profile["sleepInterval"])
        self.fail_interval = seconds(self.spec_profile["failInterval"])
        self.log = log
        self.faults = []
        self.hosts = []
        self.writer = None
        self.writer_stopped = None
        self.load = []
        self.switch = Switch(tag)
        for i in (1, 2, 3):
            self.hosts.append(Machine(f"host{i}", self.switch, i, lower_dirs, self.workdir, tag, log))
        self.client_ns, self.client_address, _ = self.switch.attach("client", 100)
        for i, h in enumerate(self.hosts, 1):
            h.keeper_uid = f"keeper{i}"
            self.configure(h)

    # ---- set-up -------------------------------------------------------------------------------
    def configure(self, h):
        peers = ",".join(f"{x.name}=http://{x.address}:2380" for x in self.hosts)
        members = [h] + [x for x in self.hosts if x is not h] if self.store_endpoints == "all" else [h]
        endpoints = ",".join(f"http://{x.address}:2379" for x in members)
        h.write_file("/etc/default/etcd", "\n".join([
            f"ETCD_NAME={h.name}",
            "ETCD_DATA_DIR=/var/lib/etcd/vmt",
            f"ETCD_LISTEN_PEER_URLS=http://{h.address}:2380",
            f"ETCD_LISTEN_CLIENT_URLS=http://{h.address}:2379,http://127.0.0.1:2379",
            f"ETCD_INITIAL_ADVERTISE_PEER_URLS=http://{h.address}:2380",
            f"ETCD_ADVERTISE_CLIENT_URLS=http://{h.address}:2379",
            f"ETCD_INITIAL_CLUSTER={peers}",
            "ETCD_INITIAL_CLUSTER_STATE=new",
            "ETCD_INITIAL_CLUSTER_TOKEN=stolon-vm-tests",
            ""]))
        store = f'store-backend = "etcdv3"\nstore-endpoints = "{endpoints}"\n'
        d = f"/etc/stolon/{CLUSTER}"
        h.write_file(f"{d}/keeper.toml", store + "\n".join([
            f'uid = "{h.keeper_uid}"',
            f'pg-listen-address = "{h.address}"',
            f"pg-port = {PG_PORT}",
            'pg-bin-path = "/usr/lib/postgresql/15/bin"',
            'pg-su-username = "postgres"', 'pg-su-auth-method = "md5"',
            'pg-repl-username = "repluser"', 'pg-repl-auth-method = "md5"',
            # STOLON_VM_KEEPER_LOG_LEVEL=debug: the keepers' debug lines in the journals.
            f'log-level = "{os.environ.get("STOLON_VM_KEEPER_LOG_LEVEL", "info")}"', ""]))
        h.write_file(f"{d}/sentinel.toml", store + f'initial-cluster-spec = "{d}/cluster-spec.json"\n')
        spec = {"initMode": "new", **self.spec_profile,
                "synchronousReplication": self.replication == "sync",
                "pgParameters": {"log_min_messages": "warning",
                                 # the standbys refuse ten writes a second: no statement text
                                 "log_min_error_statement": "panic"}}
        h.write_file(f"{d}/cluster-spec.json", json.dumps(spec) + "\n")
        h.write_file(f"{d}/proxy.toml", store + f'listen-address = "{h.address}"\nport = {PROXY_PORT}\n')
        h.write_file("/etc/stolon/stolonctl.toml", store + f'cluster-name = "{CLUSTER}"\n')
        h.write_file(f"/etc/systemd/system/stolon-proxy@{CLUSTER}.socket.d/listen.conf",
                     f"[Socket]\nListenStream=\nListenStream={h.address}:{PROXY_PORT}\n"
                     # The address exists before boot, but do not depend on it.
                     "FreeBind=yes\n")
        h.write_file(f"/etc/credstore/stolon-{CLUSTER}-pg-su-password", SU_PASSWORD, 0o600)
        h.write_file(f"/etc/credstore/stolon-{CLUSTER}-pg-repl-password", REPL_PASSWORD, 0o600)
        os.chmod(h.root / "etc/credstore", 0o700)
        wants = h.root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        for link, target in ((f"stolon@{CLUSTER}.target", "/lib/systemd/system/stolon@.target"),
                             ("etcd.service", "/lib/systemd/system/etcd.service")):
            (wants / link).unlink(missing_ok=True)
            (wants / link).symlink_to(target)
        (h.root / "var/log/journal").mkdir(parents=True, exist_ok=True)  # persistent journal
        h.write_file("/etc/hostname", f"{h.name}\n")
        h.write_file("/etc/hosts", "127.0.0.1 localhost\n" + "".join(
            f"{x.address} {x.name}\n" for x in self.hosts))

    def boot(self, timeout=240):
        for h in self.hosts:
            h.start()
        for h in self.hosts:
            h.wait_for_boot()
        self.log("hosts booted; waiting for the cluster")
        self.wait_converged(timeout)

    # ---- what the scenarios use -----------------------------------------------------------------
    def up_hosts(self):
        return [h for h in self.hosts if h.is_up()]

    def clusterdata(self, hosts=None):
        """The clusterdata as read by stolonctl on the first host that can read it, or None."""
        for h in hosts or self.up_hosts():
            rc, out = h.execute("timeout 5 stolonctl clusterdata read 2>/dev/null", timeout=10)
            if rc == 0 and out.strip().startswith("{"):
                try:
                    return json.loads(out)
                except ValueError:
                    pass
        return None

    def master_keeper(self, cd=None):
        cd = cd or self.clusterdata()
        if not cd:
            return None
        db = cd.get("dbs", {}).get(cd.get("proxy", {}).get("spec", {}).get("masterDbUid", ""))
        return db["spec"]["keeperUID"] if db else None

    def master(self, timeout=120):
        """The host whose keeper the clusterdata names master (waits for one)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            uid = self.master_keeper()
            if uid:
                return self.host_of(uid)
            time.sleep(0.5)
        raise ScenarioFailed(f"no master in the clusterdata after {timeout} s")

    def host_of(self, keeper_uid):
        return next(h for h in self.hosts if h.keeper_uid == keeper_uid)

    def standbys(self):
        m = self.master()
        return [h for h in self.hosts if h is not m]

    def fault(self, kind, **extra):
        """Records the instant a fault is injected (call right before injecting it)."""
        f = {"type": kind, "at": time.time(), **extra}
        self.faults.append(f)
        self.log(f"fault: {kind}")
        return f

    def wait_new_master(self, old_host, timeout=None, via=None):
        """Waits until the clusterdata (read from `via` hosts) names a master other than old_host."""
        timeout = timeout or self.fail_interval * 4 + 60
        deadline = time.time() + timeout
        while time.time() < deadline:
            uid = self.master_keeper(self.clusterdata(via))
            if uid and uid != old_host.keeper_uid:
                self.log(f"new master: {self.host_of(uid).name}")
                return self.host_of(uid)
            time.sleep(0.5)
        raise ScenarioFailed(f"no new master replaced {old_host.name} within {timeout:.0f} s")

    def converged(self):
        cd = self.clusterdata()
        if not cd:
            return False, "no clusterdata"
        master = cd.get("proxy", {}).get("spec", {}).get("masterDbUid", "")
        if not master or master != cd.get("cluster", {}).get("status", {}).get("master"):
            return False, "no master announced to the proxies"
        keepers = cd.get("keepers", {})
        bad = [k for k in (h.keeper_uid for h in self.hosts)
               if not keepers.get(k, {}).get("status", {}).get("healthy")]
        if bad:
            return False, f"keepers not healthy: {bad}"
        dbs = cd.get("dbs", {}).values()
        if len(dbs) != len(self.hosts):
            return False, f"{len(dbs)} dbs"
        for db in dbs:
            st = db.get("status", {})
            if not st.get("healthy") or st.get("currentGeneration") != db.get("generation"):
                return False, f"db of {db['spec']['keeperUID']} not healthy/converged"
        if self.replication == "sync" and not cd["dbs"][master].get("status", {}).get("synchronousStandbys"):
            return False, "no synchronous standby yet"
        return True, f"master {cd['dbs'][master]['spec']['keeperUID']}"

    def wait_converged(self, timeout=240):
        """Every host up, every keeper and db healthy, a master announced to the proxies."""
        for h in self.hosts:
            if not h.is_up():
                h.start()
        deadline = time.time() + timeout
        for h in self.hosts:
            h.wait_for_boot()
            # Active = READY=1: etcd serving, the keeper's info published and its PostgreSQL
            # accepting connections. The clusterdata alone can still show a host that has just
            # rebooted as healthy from before.
            for unit in HOST_UNITS:
                h.wait_for_unit(unit, timeout=max(1, deadline - time.time()))
        why = ""
        while time.time() < deadline:
            ok, why = self.converged()
            if ok:
                self.log(f"converged: {why}")
                return
            time.sleep(1)
        raise ScenarioFailed(f"cluster not converged after {timeout} s: {why}")

    def sleep(self, secs):
        time.sleep(secs)

    # ---- the client's history ----------------------------------------------------------------
    def psql(self, host, sql, target=None):
        """psql as the superuser on `host` against `target` (default: its own PostgreSQL)."""
        addr, port = target or (host.address, PG_PORT)
        return host.succeed(
            f"PGPASSWORD={SU_PASSWORD} PGCONNECT_TIMEOUT=3 psql -h {addr} -p {port} -U postgres "
            f"-d postgres -XAtq -v ON_ERROR_STOP=1 -c \"{sql}\"", timeout=60)

    def start_writer(self):
        m = self.master()
        self.psql(m, "CREATE TABLE IF NOT EXISTS history(id bigint PRIMARY KEY, target text, "
                     "sent double precision)")
        pwfile = self.workdir / "su-password"
        pwfile.write_text(SU_PASSWORD)
        pwfile.chmod(0o600)
        self.history = self.outdir / "history.jsonl"
        targets = [f"proxy-{h.name}={h.address}:{PROXY_PORT}" for h in self.hosts]
        targets += [f"pg-{h.name}={h.address}:{PG_PORT}" for h in self.hosts]
        self.writer_log = open(self.outdir / "writer.log", "w")
        self.writer = subprocess.Popen(
            ["ip", "netns", "exec", self.client_ns, sys.executable, str(HERE / "writer.py"),
             "--out", str(self.history), "--password-file", str(pwfile)] + targets,
            stdout=self.writer_log, stderr=subprocess.STDOUT, start_new_session=True)
        self.log(f"writer started (pid {self.writer.pid})")

    def stop_writer(self):
        if self.writer is None:
            return
        self.writer_stopped = time.time()
        if self.writer.poll() is None:
            self.writer.send_signal(signal.SIGTERM)
            try:
                self.writer.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.writer.kill()
                self.writer.wait()
        self.writer = None
        self.writer_log.close()

    def start_load(self, seconds, rate, clients=2, scale=2):
        """pgbench (TPC-B-like, simple protocol) from the client host through every proxy:
        `clients` sessions each, at most `rate` transactions/s per proxy, for `seconds`. Its
        logs go to <outdir>/pgbench-<host>.log; `stop_load` returns their summaries."""
        pgbench = "/usr/lib/postgresql/15/bin/pgbench"
        env = {**os.environ, "PGPASSWORD": SU_PASSWORD, "PGCONNECT_TIMEOUT": "5"}
        first = self.hosts[0]
        subprocess.run(["ip", "netns", "exec", self.client_ns, pgbench, "-i", "-q", "-s", str(scale),
                        "-h", first.address, "-p", str(PROXY_PORT), "-U", "postgres", "postgres"],
                       env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=300)
        for h in self.hosts:
            out = open(self.outdir / f"pgbench-{h.name}.log", "w")
            p = subprocess.Popen(
                ["ip", "netns", "exec", self.client_ns, pgbench, "-n", "-c", str(clients), "-j", "1",
                 "-T", str(int(seconds)), "-R", str(rate), "-P", "60", "-h", h.address,
                 "-p", str(PROXY_PORT), "-U", "postgres", "postgres"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            self.load.append((h.name, p, out))
        self.log(f"pgbench through every proxy: {clients} clients, at most {rate} tps each, {seconds} s")

    def stop_load(self, timeout=60):
        """Waits for pgbench to finish (killing it after `timeout`); its summary per proxy."""
        summaries = {}
        for name, p, out in self.load:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            out.close()
            text = (self.outdir / f"pgbench-{name}.log").read_text()
            tps = [l for l in text.splitlines() if l.startswith("tps = ")]
            summaries[name] = {"exit": p.returncode,
                               "tps": tps[-1].split()[2] if tps else None,
                               "aborted": "aborted" in text}
        self.load = []
        return summaries

    def acks(self):
        if not self.history.exists():
            return []
        return [json.loads(line) for line in self.history.read_text().splitlines() if line.strip()]

    def final_ids(self):
        m = self.master()
        out = self.psql(m, "SELECT id FROM history")
        return [int(x) for x in out.split()]

    # ---- evidence and teardown -------------------------------------------------------------------
    def save_journals(self):
        for h in self.hosts:
            if h.is_up():
                rc, out = h.execute("journalctl --no-pager -o short-precise", timeout=60)
                (self.outdir / f"journal-{h.name}.log").write_text(out)
            else:
                # A crashed host's persistent journal is still on its disk.
                rc = subprocess.run(["journalctl", "-D", str(h.root / "var/log/journal"), "--no-pager",
                                     "-o", "short-precise"], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, timeout=60)
                (self.outdir / f"journal-{h.name}.log").write_text(rc.stdout)
        cd = self.clusterdata()
        if cd:
            (self.outdir / "clusterdata.json").write_text(json.dumps(cd, indent=1))

    def destroy(self):
        try:
            self.stop_writer()
            for _, p, _ in self.load:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        finally:
            for h in self.hosts:
                try:
                    h.destroy()
                except Exception as e:  # keep cleaning the others
                    self.log(f"cleanup of {h.name}: {e}")
            self.switch.destroy()


def partition(t, host, peers):
    """Cuts `host` off from `peers` in both directions (packets silently dropped, as on a broken
    link) while everybody else, the client included, still reaches it: an nftables input filter
    on each side, set through the machine API only, so the NixOS driver runs it as is."""
    for a, others in [(host, peers)] + [(p, [host]) for p in peers]:
        addrs = ", ".join(o.address for o in others)
        a.succeed("nft add table inet vmt_partition",
                  "nft add chain inet vmt_partition input '{ type filter hook prerouting priority -400; }'",
                  f"nft add rule inet vmt_partition input ip saddr '{{ {addrs} }}' drop")


def heal(t, host, peers):
    for a in [host] + list(peers):
        a.execute("nft delete table inet vmt_partition")


def main_pid(machine, unit):
    pid = machine.succeed(f"systemctl show -p MainPID --value {unit}").strip()
    if pid in ("", "0"):
        raise ScenarioFailed(f"{machine.name}: {unit} has no main process")
    return pid


def rng(seed):
    return random.Random(seed)
