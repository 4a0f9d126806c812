"""Every host crashed at the same moment, then all booted again."""

REPLICATION = "sync"


def run(t):
    t.sleep(3)
    t.fault("all_hosts_crash")
    for h in t.hosts:
        h.send_monitor_command("stop")  # the same instant for all three
    for h in t.hosts:
        h.crash()
    t.sleep(3)
    for h in t.hosts:
        h.start()
