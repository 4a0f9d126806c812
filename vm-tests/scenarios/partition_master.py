"""Partition the master host from the other hosts while the client keeps talking to it directly
and through its own proxy; heal after the failover."""

from harness import heal, partition

REPLICATION = "sync"


def run(t):
    old = t.master()
    peers = [h for h in t.hosts if h is not old]
    t.sleep(3)
    t.fault("partition_master", host=old.name)
    partition(t, old, peers)
    try:
        t.wait_new_master(old, via=peers)
        # Keep the isolated side running with clients on it for a while.
        t.sleep(max(5, 2 * t.fail_interval))
    finally:
        heal(t, old, peers)
