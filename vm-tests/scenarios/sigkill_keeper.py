"""SIGKILL only the master's keeper process (not PostgreSQL); systemd restarts the keeper."""

from harness import KEEPER_UNIT, main_pid

REPLICATION = "sync"


def run(t):
    old = t.master()
    pid = main_pid(old, KEEPER_UNIT)
    t.sleep(3)
    t.fault("sigkill_keeper", host=old.name)
    old.succeed(f"kill -KILL {pid}")
    # Whether the master changes depends on how fast the keeper is back (RestartSec=5s) against
    # failInterval: either is fine, two masters are not.
    t.sleep(2 * t.fail_interval + 10)
