"""No fault: pgbench through every proxy while the writer runs, for STOLON_VM_STEADY_SECONDS
(default 1800). Passes when the master never changed (a change here is a false failover:
nothing was wrong). Not part of the default run nor of campaigns; run it by name, e.g.
`vm-tests/run --profile fast steady`."""

import os

REPLICATION = "sync"
FAULT_FREE = True


def run(t):
    seconds = float(os.environ.get("STOLON_VM_STEADY_SECONDS", "1800"))
    rate = int(os.environ.get("STOLON_VM_STEADY_TPS", "100"))
    t.start_load(seconds, rate)
    t.sleep(seconds)
    t.load_summary = t.stop_load()
