"""Freeze the master host (every process stopped, as a paused VM), wait for the failover, thaw."""

REPLICATION = "sync"


def run(t):
    old = t.master()
    t.sleep(3)
    t.fault("freeze_master", host=old.name)
    old.send_monitor_command("stop")
    try:
        t.wait_new_master(old, via=[h for h in t.hosts if h is not old])
        t.sleep(3)
    finally:
        old.send_monitor_command("cont")
