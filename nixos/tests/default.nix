# The NixOS VM tests, one per scenario file (flake checks and nix/checks.nix use this set).
# Each boots three stolon hosts and a client; see scenario.nix.
{ pkgs }:
builtins.mapAttrs (_: test: pkgs.testers.runNixOSTest (import test)) {
  failover = ./failover.nix;
  partition = ./partition.nix;
  etcd-quorum-loss = ./etcd-quorum-loss.nix;
  failkeeper = ./failkeeper.nix;
}
