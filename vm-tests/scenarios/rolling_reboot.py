"""Reboot every host in turn (clean power-off, boot), standbys first, waiting for the cluster to
converge after each."""

REPLICATION = "async"


def run(t):
    m = t.master()
    order = [h for h in t.hosts if h is not m] + [m]
    for h in order:
        t.fault("reboot", host=h.name)
        h.shutdown()
        h.start()
        t.wait_converged()
