# Failover (vm-tests/scenarios/crash_master.py): a host crash of the master: failover, then the crashed host rejoins as a standby.
import ./scenario.nix {
  name = "failover";
  scenario = "crash_master";
}
