# Partition (vm-tests/scenarios/partition_master.py): the master cut off from the other hosts (the client still reaches it); healed after the failover.
import ./scenario.nix {
  name = "partition";
  scenario = "partition_master";
}
