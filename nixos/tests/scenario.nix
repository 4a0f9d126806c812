# One NixOS VM test running one scenario file of vm-tests/scenarios/ (the same files the nspawn
# suite runs in CI) with vm-tests/driver/nixos.py: three hosts, each an etcd member (a static
# 3-member cluster) with a keeper, a sentinel and the socket-activated proxy of cluster `vmt`
# through services.stolon, and a client that writes through every proxy and to every PostgreSQL.
# The topology, ports, passwords and cluster spec are harness.py's (read from it below).
#
# Used as `pkgs.testers.runNixOSTest (import ./scenario.nix { name = "failover"; scenario = "crash_master"; })`.
{ name, scenario }:
{ config, lib, ... }:
let
  suite = ../../vm-tests;
  # vm-tests' Python files only: what the client VM and the test driver import.
  suiteSrc = builtins.path {
    path = suite;
    name = "stolon-vm-tests";
    filter =
      path: type:
      (type == "directory" && baseNameOf path != "__pycache__") || lib.hasSuffix ".py" path;
  };

  # A constant of harness.py or of the scenario (`NAME = value` at the start of a line).
  constant =
    file: key:
    let
      line = lib.findFirst (l: lib.hasPrefix "${key} = " l) (throw "${toString file}: no `${key} = ...` line") (
        lib.splitString "\n" (builtins.readFile file)
      );
    in
    lib.removeSuffix "\"" (lib.removePrefix "\"" (lib.removePrefix "${key} = " line));
  harness = constant (suite + "/harness.py");
  replication = constant (suite + "/scenarios/${scenario}.py") "REPLICATION";
  cluster = harness "CLUSTER";
  pgPort = lib.toInt (harness "PG_PORT");
  proxyPort = lib.toInt (harness "PROXY_PORT");
  suPassword = harness "SU_PASSWORD";
  replPassword = harness "REPL_PASSWORD";
  # harness.PROFILES["default"]; driver/nixos.py checks the running spec against it.
  profile = {
    sleepInterval = "2s";
    failInterval = "5s";
    proxyCheckInterval = "1s";
    proxyTimeout = "5s";
  };

  hostNames = [
    "host1"
    "host2"
    "host3"
  ];
  addressOf = n: config.nodes.${n}.networking.primaryIPAddress;

  host =
    i:
    { config, pkgs, ... }:
    let
      me = "host${toString i}";
      peers = lib.filter (n: n != me) hostNames;
      addr = addressOf me;
    in
    {
      imports = [ ../module.nix ];
      virtualisation.memorySize = 1024;
      virtualisation.cores = 2;
      # psql for the suite's checks, nft for its partitions.
      environment.systemPackages = [
        config.services.stolon.clusters.${cluster}.keeper.postgresqlPackage
        pkgs.nftables
      ];

      services.etcd = {
        enable = true;
        name = me;
        listenClientUrls = [
          "http://${addr}:2379"
          "http://127.0.0.1:2379"
        ];
        advertiseClientUrls = [ "http://${addr}:2379" ];
        listenPeerUrls = [ "http://${addr}:2380" ];
        initialAdvertisePeerUrls = [ "http://${addr}:2380" ];
        initialCluster = map (n: "${n}=http://${addressOf n}:2380") hostNames;
        initialClusterToken = "stolon-vm-tests";
        openFirewall = true;
      };

      # Secrets as a real host would have them: root-only files outside the Nix store.
      systemd.tmpfiles.rules = [
        "f+ /run/keys/stolon-su-password 0600 root root - ${suPassword}"
        "f+ /run/keys/stolon-repl-password 0600 root root - ${replPassword}"
      ];

      services.stolon.clusters.${cluster} = {
        # Every member, this host's first (harness.py's "all").
        store.endpoints = map (n: "http://${addressOf n}:2379") ([ me ] ++ peers);
        spec = {
          initMode = "new";
          synchronousReplication = replication == "sync";
          pgParameters = {
            log_min_messages = "warning";
            log_min_error_statement = "panic";
          };
        }
        // profile;
        keeper = {
          enable = true;
          uid = "keeper${toString i}";
          listenAddress = addr;
          port = pgPort;
          superuser = {
            name = "postgres";
            authMethod = "md5";
            passwordFile = "/run/keys/stolon-su-password";
          };
          replication = {
            name = "repluser";
            authMethod = "md5";
            passwordFile = "/run/keys/stolon-repl-password";
          };
        };
        sentinel.enable = true;
        proxy = {
          enable = true;
          listenAddress = addr;
          port = proxyPort;
        };
        openFirewall = true;
      };
    };
in
{
  name = "stolon-${name}";

  nodes = {
    host1 = host 1;
    host2 = host 2;
    host3 = host 3;
    client =
      { pkgs, ... }:
      {
        environment.systemPackages = [
          pkgs.python3
          pkgs.postgresql
        ];
        # writer.py and pgwire.py, run by driver/nixos.py as a transient unit.
        environment.etc."stolon-vm-tests".source = suiteSrc;
        systemd.tmpfiles.rules = [ "f+ /run/keys/vmt-su-password 0600 root root - ${suPassword}" ];
      };
  };

  # The test driver imports harness, checker, scenarios and driver.nixos from vm-tests.
  extraPythonPackages = p: [
    (p.buildPythonPackage {
      pname = "stolon-vm-tests";
      version = "0";
      pyproject = false;
      src = suiteSrc;
      doCheck = false; # vm-tests' own unit tests run in CI (scripts/test.sh)
      installPhase = ''
        runHook preInstall
        dest=$out/${p.python.sitePackages}
        mkdir -p $dest
        cp -r harness.py checker.py pgwire.py writer.py scenarios driver $dest/
        runHook postInstall
      '';
    })
  ];

  globalTimeout = 1800;

  testScript = ''
    from driver.nixos import run_scenario

    run_scenario(
        "${scenario}",
        [host1, host2, host3],
        client,
        {${lib.concatMapStringsSep ", " (n: ''"${n}": "${addressOf n}"'') (hostNames ++ [ "client" ])}},
    )
  '';
}
