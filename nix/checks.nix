# Offline evaluation of the NixOS module and the VM tests against a nixpkgs tree (nixos/check.sh
# runs every attribute). Nothing here builds; it evaluates and instantiates.
#
#   nix-instantiate --eval --strict --json nix/checks.nix --arg nixpkgs <tree> -A units
#   nix-instantiate nix/checks.nix --arg nixpkgs <tree> -A toplevel
#   nix-instantiate nix/checks.nix --arg nixpkgs <tree> -A vmTests.failover
#   nix-instantiate --eval --strict --json nix/checks.nix --arg nixpkgs <tree> -A testScripts.failover
#   nix-instantiate nix/checks.nix --arg nixpkgs <tree> --argstr case missingPassword -A negative   # must fail
{
  nixpkgs,
  system ? "x86_64-linux",
  case ? "badType",
}:
let
  pkgs = import nixpkgs { inherit system; };
  inherit (pkgs) lib;

  evalNode =
    cfg:
    import (nixpkgs + "/nixos/lib/eval-config.nix") {
      inherit system;
      modules = [
        ../nixos/module.nix
        {
          boot.loader.grub.enable = false;
          fileSystems."/" = {
            device = "/dev/vda";
            fsType = "ext4";
          };
          system.stateVersion = "26.05";
        }
        cfg
      ];
    };

  # One host of a three-host cluster `main` with every role, TLS to etcd, and a second cluster
  # `reporting` with only a proxy (socket activation off), as in the README.
  example = {
    services.stolon.clusters.main = {
      store = {
        endpoints = [
          "https://192.0.2.11:2379"
          "https://192.0.2.12:2379"
          "https://192.0.2.13:2379"
        ];
        caFile = "/etc/ssl/etcd/ca.pem";
        certFile = "/etc/ssl/etcd/client.pem";
        keyFile = "/run/keys/etcd-client.key";
      };
      spec = {
        initMode = "new";
        synchronousReplication = true;
      };
      keeper = {
        enable = true;
        uid = "keeper1";
        listenAddress = "192.0.2.11";
        superuser.passwordFile = "/run/keys/stolon-su-password";
        replication.passwordFile = "/run/keys/stolon-repl-password";
        settings.log-level = "debug";
      };
      sentinel.enable = true;
      proxy = {
        enable = true;
        listenAddress = "192.0.2.11";
        readOnly.enable = true;
      };
      openFirewall = true;
    };
    services.stolon.clusters.reporting = {
      proxy = {
        enable = true;
        port = 25442;
        socketActivation = false;
        readOnly = {
          enable = true;
          port = 25441;
          fallbackMaster = true;
        };
      };
    };
    services.stolon.stolonctlCluster = "main";
  };

  node = evalNode example;
  inherit (node.config.systemd) units;
  etc = node.config.environment.etc;

  # Configurations that must not evaluate, each with the message it must fail with (check.sh
  # greps for it).
  negatives = {
    badType = {
      expect = "is not of type";
      cfg.services.stolon.clusters.main.keeper = {
        enable = true;
        uid = "keeper1";
        listenAddress = "192.0.2.11";
        port = "5432";
        superuser.authMethod = "trust";
        replication.authMethod = "trust";
      };
    };
    unknownOption = {
      expect = "does not exist";
      cfg.services.stolon.clusters.main.keeper.pasword = "x";
    };
    missingPassword = {
      expect = "keeper.superuser.passwordFile must name a file";
      cfg.services.stolon.clusters.main.keeper = {
        enable = true;
        uid = "keeper1";
        listenAddress = "192.0.2.11";
        replication.passwordFile = "/run/keys/repl";
      };
    };
    missingUid = {
      expect = "keeper.uid must be set";
      cfg.services.stolon.clusters.main.keeper = {
        enable = true;
        listenAddress = "192.0.2.11";
        superuser.authMethod = "trust";
        replication.authMethod = "trust";
      };
    };
    passwordInStore = {
      expect = "outside the Nix store";
      cfg.services.stolon.clusters.main.keeper = {
        enable = true;
        uid = "keeper1";
        listenAddress = "192.0.2.11";
        superuser.passwordFile = "${builtins.storeDir}/0000-su-password";
        replication.passwordFile = "/run/keys/repl";
      };
    };
    portCollision = {
      expect = "use the same TCP port";
      cfg.services.stolon.clusters = {
        a.proxy.enable = true;
        b.proxy.enable = true;
      };
    };
    badClusterName = {
      expect = "is not a valid cluster name";
      cfg.services.stolon.clusters."main/x".sentinel.enable = true;
    };
    unknownSetting = {
      expect = "unknown key(s) pg-prot";
      cfg.services.stolon.clusters.main = {
        sentinel.enable = true;
        keeper.settings.pg-prot = 5433;
      };
    };
    reservedSetting = {
      expect = "cannot be set here";
      cfg.services.stolon.clusters.main.sentinel = {
        enable = true;
        settings.cluster-name = "other";
      };
    };
  };

  # The test script as nixpkgs' driver type-checks and lints it (nixos/lib/testing/driver.nix):
  # test-script-prepend.py, one `<node> = create_fake_qemu_machine()` per machine (and vlan),
  # then the script.
  typeCheckedScript =
    test:
    let
      inherit (test.config) driverConfiguration;
      pythonize = lib.replaceStrings [ "-" ] [ "_" ];
    in
    builtins.readFile (nixpkgs + "/nixos/lib/test-script-prepend.py")
    + lib.concatStringsSep "\n" (
      map (v: "vlan${toString v} = create_fake_vlan()") driverConfiguration.vlans
      ++ map (n: "${pythonize n} = create_fake_qemu_machine()") (lib.attrNames driverConfiguration.vms)
    )
    + "\n"
    + test.config.testScriptString;

  vmTests = import ../nixos/tests { inherit pkgs; };
in
{
  inherit node vmTests;
  toplevel = node.config.system.build.toplevel;

  # What check.sh compares with systemd/ (unit texts) and flags.rs (the TOML files).
  units = {
    keeper = units."stolon-keeper@main.service".text;
    sentinel = units."stolon-sentinel@main.service".text;
    proxy = units."stolon-proxy@main.service".text;
    socket = units."stolon-proxy@main.socket".text;
    readOnlySocket = units."stolon-proxy-read-only@main.socket".text;
    target = units."stolon@main.target".text;
    proxyNoSocket = units."stolon-proxy@reporting.service".text;
    targetNoSocket = units."stolon@reporting.target".text;
  };
  unitNames = lib.attrNames (lib.filterAttrs (n: _: lib.hasInfix "stolon" n) units);
  configFiles = {
    keeper = etc."stolon/main/keeper.toml".text;
    sentinel = etc."stolon/main/sentinel.toml".text;
    proxy = etc."stolon/main/proxy.toml".text;
    spec = etc."stolon/main/cluster-spec.json".text;
    stolonctl = etc."stolon/stolonctl.toml".text;
    reportingProxy = etc."stolon/reporting/proxy.toml".text;
  };
  host = {
    firewall = node.config.networking.firewall.allowedTCPPorts;
    tmpfiles = node.config.systemd.tmpfiles.rules;
    postgresUser = { inherit (node.config.users.users.postgres) uid group; };
  };
  packagePath = "${node.config.services.stolon.package}";

  testScripts = lib.mapAttrs (_: typeCheckedScript) vmTests;
  testNames = lib.attrNames vmTests;

  negativeCases = lib.mapAttrs (_: n: n.expect) negatives;
  negative = (evalNode negatives.${case}.cfg).config.system.build.toplevel;
}
