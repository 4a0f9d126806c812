"""Reboot every host in turn (clean power-off, down for 2 x failInterval as a real machine's
reboot would be, boot), standbys first, waiting for the cluster to converge after each. The
master's reboot is a failover."""

REPLICATION = "async"


def run(t):
    m = t.master()
    order = [h for h in t.hosts if h is not m] + [m]
    for h in order:
        t.fault("reboot", host=h.name)
        h.shutdown()
        t.sleep(2 * t.fail_interval)
        h.start()
        t.wait_converged()
        t.sleep(2)
