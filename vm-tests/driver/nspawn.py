"""The nspawn driver: the subset of the NixOS test driver's machine API the scenarios use,
implemented on systemd-nspawn containers booted (`-b`) from a cached Debian root.

Every host has
  - its own network namespace (`ip netns`), linked by a veth pair to a bridge that lives in a
    "switch" namespace the suite creates: the root namespace never gets an address or a route
    toward the test addresses;
  - an overlayfs root (lower: the cached root plus this run's .deb layer; upper: per host and
    scenario), so every scenario starts from clean hosts and a crash keeps the disk;
  - its own cgroups (name=systemd, unified and the v1 freezer) holding systemd-nspawn and so the
    whole container: crash() freezes that cgroup, takes the link down, SIGKILLs every process in
    it and thaws it, so all of them die at the same instant; send_monitor_command("stop"/"cont")
    freezes and thaws it as QEMU's monitor pauses a VM.

Only names derived from the suite's tag are created and removed; processes are only signalled
through the cgroups created here or by the PIDs recorded here.
"""

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
FREEZER = CGROUP_ROOT / "freezer"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class MachineError(Exception):
    pass


def run(cmd, check=True, timeout=60, **kw):
    return subprocess.run(cmd, check=check, timeout=timeout, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kw)


class Switch:
    """The private network: a bridge inside a namespace of its own."""

    def __init__(self, tag, subnet="10.213.0"):
        self.tag = tag
        self.subnet = subnet
        self.ns = f"{tag}-sw"
        self.namespaces = []
        run(["ip", "netns", "add", self.ns])
        self.namespaces.append(self.ns)
        run(["ip", "-n", self.ns, "link", "set", "lo", "up"])
        run(["ip", "-n", self.ns, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", self.ns, "link", "set", "br0", "up"])

    def attach(self, name, host_octet):
        """A namespace for host `name` with eth0 = <subnet>.<host_octet>/24 on the bridge."""
        ns = f"{self.tag}-{name}"
        run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        port = f"p-{name}"[:15]
        run(["ip", "-n", self.ns, "link", "add", port, "type", "veth", "peer", "name", "eth0",
             "netns", ns])
        run(["ip", "-n", self.ns, "link", "set", port, "master", "br0", "up"])
        addr = f"{self.subnet}.{host_octet}"
        run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns, addr, port

    def set_port(self, port, up):
        run(["ip", "-n", self.ns, "link", "set", port, "up" if up else "down"])

    def destroy(self):
        # Deleting a namespace deletes its interfaces (and so both ends of every veth).
        for ns in reversed(self.namespaces):
            run(["ip", "netns", "delete", ns], check=False)
        self.namespaces = []


class Machine:
    """One host: the NixOS test driver's Machine API on an nspawn container."""

    def __init__(self, name, switch, host_octet, lower_dirs, workdir, tag, log):
        self.name = name
        self.switch = switch
        self.log = log
        self.machine = f"{tag}-{name}"
        self.netns, self.address, self.port = switch.attach(name, host_octet)
        self.dir = Path(workdir) / name
        self.root = self.dir / "root"
        for d in ("upper", "ovl-work", "root"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={':'.join(map(str, lower_dirs))},upperdir={self.dir / 'upper'},"
             f"workdir={self.dir / 'ovl-work'}", str(self.root)])
        self.mounted = True
        self.cgroups = [CGROUP_ROOT / h / self.machine for h in ("systemd", "unified", "freezer")
                        if (CGROUP_ROOT / h).is_dir()]
        for cg in self.cgroups:
            cg.mkdir(exist_ok=True)
        self.proc = None
        self.pid1 = None
        self.boots = 0
        self.console = None

    # ---- files, before or between boots ---------------------------------------------------
    def write_file(self, path, content, mode=0o644):
        p = self.root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
        os.chmod(p, mode)

    # ---- lifecycle ------------------------------------------------------------------------
    def is_up(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        if self.is_up():
            return
        self._reap()
        self.switch.set_port(self.port, True)
        self.boots += 1
        self.console = open(self.dir / f"console-{self.boots}.log", "w")
        procs = [cg / "cgroup.procs" for cg in self.cgroups]

        def enter_cgroups():
            for p in procs:
                with open(p, "w") as f:
                    f.write("0")

        self.proc = subprocess.Popen(
            ["systemd-nspawn", "-q", "-D", str(self.root), "-M", self.machine, "--hostname", self.name,
             "-b", "--register=no", "--keep-unit", f"--network-namespace-path=/run/netns/{self.netns}",
             "--console=read-only"],
            stdin=subprocess.DEVNULL, stdout=self.console, stderr=subprocess.STDOUT,
            preexec_fn=enter_cgroups, start_new_session=True)
        self.pid1 = None
        self._find_pid1(10)

    def _find_pid1(self, timeout):
        """The container's PID 1: the child of systemd-nspawn that lives in another PID namespace
        (nspawn's short-lived intermediate child does not)."""
        own = os.readlink("/proc/self/ns/pid")
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            except OSError:
                kids = []
            for k in kids:
                try:
                    if os.readlink(f"/proc/{k}/ns/pid") != own:
                        self.pid1 = int(k)
                        return
                except OSError:
                    pass
            if self.proc.poll() is not None:
                raise MachineError(f"{self.name}: systemd-nspawn exited: {self._console_tail()}")
            time.sleep(0.05)
        raise MachineError(f"{self.name}: no container PID 1 after {timeout} s")

    def wait_for_boot(self, timeout=60):
        deadline = time.time() + timeout
        out = ""
        while time.time() < deadline:
            rc, out = self.execute("systemctl is-system-running", timeout=10)
            if out.strip() in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise MachineError(f"{self.name}: not booted after {timeout} s (is-system-running: {out.strip()!r}):"
                           f" {self._console_tail()[-600:]}")

    def _console_tail(self):
        try:
            return (self.dir / f"console-{self.boots}.log").read_text()[-2000:]
        except OSError:
            return ""

    def _pids(self):
        pids = set()
        for cg in self.cgroups:
            for procs in cg.rglob("cgroup.procs"):
                try:
                    pids.update(int(p) for p in procs.read_text().split())
                except OSError:
                    pass
        return pids

    def _freeze(self, state):
        f = FREEZER / self.machine / "freezer.state"
        f.write_text(state)
        if state == "FROZEN":
            deadline = time.time() + 10
            while f.read_text().strip() != "FROZEN" and time.time() < deadline:
                time.sleep(0.01)

    def crash(self):
        """Power failure: every process of the host dies at once and its link goes down."""
        if not self.is_up():
            return
        self.log(f"{self.name}: crash")
        self._freeze("FROZEN")
        self.switch.set_port(self.port, False)
        for _ in range(50):
            pids = self._pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._freeze("THAWED")
            time.sleep(0.1)
        self._freeze("THAWED")
        self._reap()

    def shutdown(self, timeout=90):
        """A clean power-off: systemd stops every unit, then the container exits."""
        if not self.is_up():
            return
        self.log(f"{self.name}: shutdown")
        self.execute("systemctl poweroff --no-block", timeout=10)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.log(f"{self.name}: no power-off after {timeout} s, crashing it")
            self.crash()
        self.switch.set_port(self.port, False)
        self._reap()

    def _reap(self):
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        self.pid1 = None
        if self.console is not None:
            self.console.close()
            self.console = None
        # Empty cgroups the container's systemd left, deepest first (ours stay until destroy).
        for cg in self.cgroups:
            for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                try:
                    d.rmdir()
                except OSError:
                    pass
        prop = Path("/run/systemd/nspawn/propagate") / self.machine
        if prop.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(prop)], check=False)

    def destroy(self):
        if self.is_up():
            self.crash()
        self._reap()
        for cg in reversed(self.cgroups):
            try:
                cg.rmdir()
            except OSError:
                pass
        if self.mounted:
            r = run(["umount", str(self.root)], check=False)
            if r.returncode != 0:
                run(["umount", "-l", str(self.root)], check=False)
            self.mounted = False

    # ---- network --------------------------------------------------------------------------
    def block(self):
        """Cuts the host's link (its side of the switch), as QEMU's set_link off."""
        self.log(f"{self.name}: block")
        self.switch.set_port(self.port, False)

    def unblock(self):
        self.log(f"{self.name}: unblock")
        self.switch.set_port(self.port, True)

    def send_monitor_command(self, command):
        """QEMU monitor "stop" / "cont": freeze or thaw every process of the host."""
        if command == "stop":
            self.log(f"{self.name}: freeze")
            self._freeze("FROZEN")
        elif command == "cont":
            self.log(f"{self.name}: thaw")
            self._freeze("THAWED")
        else:
            raise MachineError(f"monitor command {command!r} not supported by the nspawn driver")
        return ""

    # ---- commands -------------------------------------------------------------------------
    def execute(self, command, check_return=True, timeout=900):
        """Runs a shell command inside the host as root; returns (status, stdout+stderr)."""
        if not self.is_up() or self.pid1 is None:
            return 255, f"{self.name} is not running"
        if not os.path.exists(f"/proc/{self.pid1}"):
            try:
                self._find_pid1(5)
            except MachineError as e:
                return 255, str(e)
        try:
            r = subprocess.run(
                ["nsenter", "-t", str(self.pid1), "-a", "env", "-i", f"PATH={PATH}", "LANG=C.UTF-8",
                 "sh", "-c", command],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                stdin=subprocess.DEVNULL)
            return r.returncode, r.stdout
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            return 124, out + f"\n(timed out after {timeout} s)"

    def succeed(self, *commands, timeout=900):
        out = ""
        for c in commands:
            rc, o = self.execute(c, timeout=timeout)
            if rc != 0:
                raise MachineError(f"{self.name}: command failed ({rc}): {c}\n{o[-3000:]}")
            out += o
        return out

    def fail(self, *commands, timeout=900):
        out = ""
        for c in commands:
            rc, o = self.execute(c, timeout=timeout)
            if rc == 0:
                raise MachineError(f"{self.name}: command unexpectedly succeeded: {c}\n{o[-3000:]}")
            out += o
        return out

    def wait_until_succeeds(self, command, timeout=900):
        deadline = time.time() + timeout
        while True:
            rc, out = self.execute(command, timeout=max(1, min(30, deadline - time.time())))
            if rc == 0:
                return out
            if time.time() > deadline:
                raise MachineError(f"{self.name}: not succeeded in {timeout} s: {command}\n{out[-3000:]}")
            time.sleep(0.5)

    def wait_until_fails(self, command, timeout=900):
        deadline = time.time() + timeout
        while True:
            rc, out = self.execute(command, timeout=max(1, min(30, deadline - time.time())))
            if rc != 0:
                return out
            if time.time() > deadline:
                raise MachineError(f"{self.name}: still succeeds after {timeout} s: {command}")
            time.sleep(0.5)

    def wait_for_unit(self, unit, timeout=900):
        deadline = time.time() + timeout
        while True:
            rc, state = self.execute(f"systemctl is-active {shlex.quote(unit)}", timeout=10)
            state = state.strip()
            if state == "active":
                return
            if state == "failed":
                raise MachineError(f"{self.name}: unit {unit} failed:\n" +
                                   self.execute(f"journalctl -u {shlex.quote(unit)} -n 30 --no-pager")[1])
            if time.time() > deadline:
                raise MachineError(f"{self.name}: unit {unit} not active after {timeout} s ({state})")
            time.sleep(0.5)

    def wait_for_open_port(self, port, addr="localhost", timeout=900):
        self.wait_until_succeeds(f"bash -c 'exec 3<>/dev/tcp/{addr}/{port}'", timeout=timeout)

    def sleep(self, secs):
        time.sleep(secs)
