{
  description = "stolon: PostgreSQL high availability (keeper, sentinel, proxy, stolonctl) on etcd v3, with a NixOS module";

  # flake.lock pins this. Offline (no GitHub), evaluate against a local tree with
  # `--override-input nixpkgs path:/path/to/nixpkgs` (see nixos/README.md).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      overlays.default = final: _prev: { stolon = final.callPackage ./nix/package.nix { }; };

      packages = forAllSystems (pkgs: rec {
        stolon = pkgs.callPackage ./nix/package.nix { };
        default = stolon;
      });

      # Written as an import (not a path) so that Nix 2.8 accepts it too.
      nixosModules.default = import ./nixos/module.nix;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.stolon ];
          packages = [
            pkgs.cargo
            pkgs.rustc
            pkgs.clippy
            pkgs.rustfmt
            pkgs.etcd
            pkgs.postgresql
            pkgs.protobuf
            pkgs.python3
          ];
          # scripts/test.sh and the cluster tests find PostgreSQL here.
          STOLON_TEST_PG_BIN = "${pkgs.postgresql}/bin";
        };
      });

      # `nix flake check` builds them all; one: `nix build .#checks.x86_64-linux.failover`.
      checks = forAllSystems (
        pkgs:
        {
          stolon = self.packages.${pkgs.stdenv.hostPlatform.system}.stolon;
        }
        # The VM tests' hosts use the module's default package: this same derivation.
        // import ./nixos/tests { inherit pkgs; }
      );
    };
}
