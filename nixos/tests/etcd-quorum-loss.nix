# Etcd-quorum-loss (vm-tests/scenarios/etcd_quorum_loss.py): two of the three etcd members down for 3 x failInterval + 10 s, then back.
import ./scenario.nix {
  name = "etcd-quorum-loss";
  scenario = "etcd_quorum_loss";
}
