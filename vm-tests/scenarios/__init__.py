"""One host fault per module. Each has REPLICATION ("sync" or "async": the cluster spec's
synchronousReplication for its own run) and run(t): inject the fault through the NixOS test
driver's machine API on t.hosts, wait for its effect, heal it. The runner then waits for the
cluster to converge and checks the history. The campaign mode calls the same run functions."""

ORDER = ["crash_master", "freeze_master", "partition_master", "sigstop_keeper", "sigkill_keeper",
         "etcd_quorum_loss", "failkeeper", "rolling_reboot", "all_hosts_crash"]

# Run only when named (not by default, not in campaigns): a long fault-free run.
BY_NAME_ONLY = ["steady"]
