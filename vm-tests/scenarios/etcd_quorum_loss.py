"""Lose etcd quorum (two of the three members down), hold it for a while, then restore it."""

REPLICATION = "sync"


def run(t):
    m = t.master()
    # The master's own member and one other: the master's keeper loses the store for sure.
    down = [m, next(h for h in t.hosts if h is not m)]
    t.sleep(3)
    t.fault("etcd_quorum_loss", hosts=[h.name for h in down])
    for h in down:
        h.succeed("systemctl kill -s KILL etcd.service; systemctl stop etcd.service")
    t.sleep(3 * t.fail_interval + 10)
    for h in down:
        h.succeed("systemctl start etcd.service")
