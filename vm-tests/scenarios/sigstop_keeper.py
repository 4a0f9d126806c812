"""SIGSTOP only the master's keeper process (PostgreSQL keeps running), then SIGCONT it."""

from harness import KEEPER_UNIT, main_pid

REPLICATION = "sync"


def run(t):
    old = t.master()
    pid = main_pid(old, KEEPER_UNIT)
    t.sleep(3)
    t.fault("sigstop_keeper", host=old.name)
    old.succeed(f"kill -STOP {pid}")
    try:
        t.wait_new_master(old)
        t.sleep(max(5, 2 * t.fail_interval))
    finally:
        old.execute(f"kill -CONT {pid}")
