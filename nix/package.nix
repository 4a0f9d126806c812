# stolon: the four binaries, the systemd units of systemd/ (ExecStart pointing into this package)
# and the man pages, built from this repository.
{
  lib,
  rustPlatform,
  coreutils,
  help2man,
  installShellFiles,
  openssl,
  pkg-config,
  protobuf,
}:
let
  root = ../.;
  # Only what the build reads: no target/, no vm-tests or packaging output, no editor files.
  # (lib.fileset would be nicer but needs builtins.readFileType, which Nix 2.8 lacks.)
  src = lib.cleanSourceWith {
    name = "stolon-source";
    src = root;
    filter =
      path: type:
      let
        rel = lib.removePrefix (toString root + "/") (toString path);
        top = lib.head (lib.splitString "/" rel);
      in
      lib.cleanSourceFilter path type
      && lib.elem top [
        "Cargo.toml"
        "Cargo.lock"
        "src"
        "tests"
        "bench"
        "systemd"
        "packaging"
        "proptest-regressions"
      ];
  };
in
rustPlatform.buildRustPackage {
  pname = "stolon";
  version = (lib.importTOML ../Cargo.toml).package.version;
  inherit src;

  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [
    pkg-config
    protobuf
    help2man
    installShellFiles
  ];
  buildInputs = [ openssl ];
  # prost-build (through etcd-client) runs protoc.
  PROTOC = "${protobuf}/bin/protoc";

  # Only the unit tests of the library and the binaries. The tests in tests/ start real etcd and
  # PostgreSQL clusters, systemd and the built binaries, and the sentinel's loop_etcd unit tests
  # start etcd: none of that exists in the build sandbox (no network namespace peers, no systemd,
  # no PostgreSQL user). They run in CI (scripts/test.sh) and the VM tests run the real thing.
  cargoTestFlags = [
    "--lib"
    "--bins"
  ];
  checkFlags = [ "--skip=sentinel::tests::loop_etcd" ];

  postInstall = ''
    # The units as the .deb ships them, with their binaries (and kill) in the Nix store.
    install -Dm644 -t $out/lib/systemd/system systemd/*
    substituteInPlace $out/lib/systemd/system/* \
      --replace-quiet /usr/bin/ $out/bin/ \
      --replace-quiet '/bin/kill ' '${coreutils}/bin/kill '
    install -Dm644 packaging/tmpfiles.d/stolon.conf $out/lib/tmpfiles.d/stolon.conf
    install -Dm644 -t $out/share/doc/stolon/example packaging/etc/stolon/example/*.toml

    # Man pages as packaging/build.sh makes them: help2man on each --help plus packaging/man/.
    for b in stolon-keeper stolon-sentinel stolon-proxy stolonctl; do
      help2man --no-info --section=1 --include=packaging/man/$b.h2m \
        --output=$b.1 $out/bin/$b
      installManPage $b.1
    done
  '';

  passthru.fromStolonRepository = true;

  meta = {
    description = "PostgreSQL high-availability manager compatible with stolon (keeper, sentinel, proxy, stolonctl) on etcd v3";
    homepage = "https://github.com/sorintlab/stolon";
    license = lib.licenses.asl20;
    platforms = lib.platforms.linux;
    mainProgram = "stolonctl";
  };
}
