"""`stolonctl failkeeper` on the master's keeper while the writers run."""

REPLICATION = "async"


def run(t):
    old = t.master()
    other = next(h for h in t.hosts if h is not old)
    t.sleep(3)
    t.fault("failkeeper", host=old.name)
    other.succeed(f"stolonctl failkeeper {old.keeper_uid}")
    t.wait_new_master(old)
