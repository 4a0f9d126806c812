# Failkeeper (vm-tests/scenarios/failkeeper.py): stolonctl failkeeper on the master under load: a switchover.
import ./scenario.nix {
  name = "failkeeper";
  scenario = "failkeeper";
}
