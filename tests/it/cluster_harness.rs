//! The harness's own process handling, checked against real etcd and PostgreSQL (no stolon
//! binaries involved): if these fail, the cluster tests' failures say nothing about stolon.

use crate::support;

use std::time::Duration;
use support::procs::{self, Proc, RunAs};
use support::{Etcd, connection_refused, pg_bin, tls, wait_until};

#[test]
fn etcd_restarts_on_same_data_dir_and_ports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let mut etcd = Etcd::start_in(dir.path(), None);
    let put = etcd.etcdctl(&["put", "k", "v1"]);
    assert!(put.status.success(), "etcdctl put: {put:?}");

    etcd.stop();
    assert!(
        connection_refused(etcd.client_port),
        "etcd still listening after stop"
    );

    etcd.start_again();
    let get = etcd.etcdctl(&["get", "k", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "v1");
}

#[test]
fn etcd_over_tls_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let certs = tls::Certs::generate(&dir.path().join("tls"), RunAs::Me);
    let etcd = Etcd::start_in(dir.path(), Some(certs.clone()));
    assert!(etcd.endpoint().starts_with("https://"));
    assert!(etcd.etcdctl(&["put", "k", "v"]).status.success());

    let anonymous = std::process::Command::new("etcdctl")
        .args(["--endpoints", &etcd.endpoint(), "--command-timeout=2s"])
        .arg("--cacert")
        .arg(&certs.ca_cert)
        .args(["get", "k"])
        .output()
        .unwrap();
    assert!(
        !anonymous.status.success(),
        "etcd accepted a client without a certificate"
    );
}

/// A postgres started under a process group of its own is found through postmaster.pid and
/// killed with its backends.
#[test]
fn postmaster_is_killed_from_its_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    std::fs::set_permissions(base, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let user = RunAs::keeper_user();
    let pgdata = base.join("pgdata");
    std::fs::create_dir(&pgdata).unwrap();
    user.chown(&pgdata);
    user.chown(base);
    let log = base.join("pg.log");

    let mut initdb = std::process::Command::new(format!("{}/initdb", pg_bin()));
    initdb
        .arg("-D")
        .arg(&pgdata)
        .arg("-U")
        .arg("postgres")
        .arg("-A")
        .arg("trust");
    let mut p = Proc::spawn("initdb", initdb, &log, user);
    wait_until(Duration::from_secs(60), "initdb to finish", || p.exited());

    let port = support::free_ports(1)[0];
    let mut pg = std::process::Command::new(format!("{}/postgres", pg_bin()));
    pg.arg("-D")
        .arg(&pgdata)
        .arg("-p")
        .arg(port.to_string())
        .arg("-c")
        .arg("listen_addresses=127.0.0.1")
        .arg("-c")
        .arg("unix_socket_directories=/tmp");
    let mut wrapper = Proc::spawn("pg", pg, &log, user);
    let pid = support::wait_for(Duration::from_secs(30), "postmaster.pid", || {
        procs::postmaster_pid(&pgdata)
    });
    assert_eq!(pid, wrapper.pid());
    wait_until(Duration::from_secs(30), "postgres to listen", || {
        !connection_refused(port)
    });
    procs::kill_postmaster(&pgdata, None);
    assert!(wrapper.exited(), "postmaster survived kill_postmaster");
    assert!(
        connection_refused(port),
        "port still open after kill_postmaster"
    );
}
