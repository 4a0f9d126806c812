"""Crash the master host (every process dies at once, its link goes down), then boot it again."""

REPLICATION = "sync"


def run(t):
    old = t.master()
    t.sleep(3)
    t.fault("crash_master", host=old.name)
    old.crash()
    t.wait_new_master(old)
    t.sleep(2)
    old.start()
