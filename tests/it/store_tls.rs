//! The store's TLS (`--store-cert-file/--store-key/--store-ca-file/--store-skip-tls-verify`)
//! against a real etcd serving https with certificates made by the openssl CLI.

use crate::support;

use support::fixtures::{keeper_info, new_cluster_data};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use stolon::store::{CasOutcome, Store, StoreBackend, StoreConfig, StoreError, StoreEvent};
use support::procs::{Proc, RunAs};
use support::tls::Certs;

/// A single-member etcd serving https on a free 127.0.0.1 port; killed on drop (the `Proc`).
struct TlsEtcd {
    host: &'static str,
    port: u16,
    dir: tempfile::TempDir,
    _proc: Proc,
}

impl TlsEtcd {
    /// `client_cert_auth`: etcd refuses clients without a certificate signed by the CA.
    fn start(certs: &Certs, client_cert_auth: bool) -> TlsEtcd {
        TlsEtcd::start_on("127.0.0.1", certs, client_cert_auth)
    }

    /// On another loopback address than the one the server certificate names (127.0.0.1).
    fn start_on(host: &'static str, certs: &Certs, client_cert_auth: bool) -> TlsEtcd {
        let dir = tempfile::tempdir().unwrap();
        let ports = support::free_ports(2);
        let (port, peer) = (ports[0], format!("http://127.0.0.1:{}", ports[1]));
        let url = format!("https://{host}:{port}");
        let mut cmd = Command::new("etcd");
        cmd.arg("--name=t")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .arg(format!("--cert-file={}", certs.server_cert.display()))
            .arg(format!("--key-file={}", certs.server_key.display()));
        if client_cert_auth {
            cmd.arg(format!("--trusted-ca-file={}", certs.ca_cert.display()))
                .arg("--client-cert-auth");
        }
        let proc = Proc::spawn("etcd", cmd, &dir.path().join("etcd.log"), RunAs::Me);
        TlsEtcd {
            host,
            port,
            dir,
            _proc: proc,
        }
    }

    fn url(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until a fully configured store gets an answer (not verifying the host name, so
    /// `start_on` works too).
    async fn wait_ready(&self, certs: &Certs) {
        let mut cfg = full_config(self, certs, "ready");
        cfg.skip_tls_verify = self.host != "127.0.0.1";
        let store = Store::connect(&cfg).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match store.get_cluster_data_raw().await {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("etcd at {} not ready: {e}\n{}", self.url(), self.log_tail())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

fn certs(dir: &Path) -> Certs {
    Certs::generate(dir, RunAs::Me)
}

fn config(etcd: &TlsEtcd, cluster: &str) -> StoreConfig {
    support::etcd::store_config(&etcd.url(), cluster, Duration::from_secs(3))
}

/// CA file and client certificate: what a production setup passes.
fn full_config(etcd: &TlsEtcd, certs: &Certs, cluster: &str) -> StoreConfig {
    StoreConfig {
        ca_file: Some(certs.ca_cert.clone()),
        cert_file: Some(certs.client_cert.clone()),
        key_file: Some(certs.client_key.clone()),
        ..config(etcd, cluster)
    }
}

/// The error of the first request (or of connect) with `cfg`.
async fn first_error(cfg: &StoreConfig) -> StoreError {
    let started = Instant::now();
    let e = match Store::connect(cfg).await {
        Ok(s) => s
            .get_cluster_data_raw()
            .await
            .expect_err("the request should have failed"),
        Err(e) => e,
    };
    // A TLS refusal is reported as such, not after the request timeout as a bare timeout.
    assert!(
        !matches!(e, StoreError::Timeout(_)),
        "timed out after {:?} instead of a TLS error",
        started.elapsed()
    );
    e
}

/// Reads and writes the cluster data, an info key and a watch event through `store`.
async fn exercise(store: &Store) {
    let cd = new_cluster_data();
    assert!(matches!(
        store.cas_cluster_data(&cd, 0).await.unwrap(),
        CasOutcome::Written { .. }
    ));
    assert_eq!(store.get_cluster_data().await.unwrap().unwrap().value, cd);
    let mut rx = store.watch().await.unwrap();
    store.put_keeper_info(&keeper_info("k1")).await.unwrap();
    assert_eq!(store.get_keepers_info().await.unwrap().len(), 1);
    let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no store event within 10s")
        .expect("watch closed");
    assert!(matches!(ev, StoreEvent::KeeperInfo { .. }), "{ev:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_and_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let etcd = TlsEtcd::start(&certs, true);
    etcd.wait_ready(&certs).await;
    let store = Store::connect(&full_config(&etcd, &certs, "full"))
        .await
        .unwrap();
    exercise(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_server_certificate_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let etcd = TlsEtcd::start(&certs, true);
    etcd.wait_ready(&certs).await;

    // No CA file: the system roots do not know our throwaway CA.
    let mut no_ca = full_config(&etcd, &certs, "no-ca");
    no_ca.ca_file = None;
    let e = first_error(&no_ca).await.to_string();
    eprintln!("without the CA: {e}");
    assert!(
        e.contains("the etcd server certificate is not trusted: check --store-ca-file"),
        "unclear error without the CA: {e}"
    );

    // Another CA than the server's: the same.
    let other = certs_in(dir.path(), "other");
    let mut wrong_ca = full_config(&etcd, &certs, "wrong-ca");
    wrong_ca.ca_file = Some(other.ca_cert.clone());
    let e = first_error(&wrong_ca).await.to_string();
    eprintln!("with another CA: {e}");
    assert!(
        e.contains("the etcd server certificate is not trusted: check --store-ca-file"),
        "unclear error with the wrong CA: {e}"
    );
}

fn certs_in(base: &Path, name: &str) -> Certs {
    let d: PathBuf = base.join(name);
    certs(&d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_client_certificate_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let etcd = TlsEtcd::start(&certs, true);
    etcd.wait_ready(&certs).await;
    let mut no_cert = full_config(&etcd, &certs, "no-cert");
    no_cert.cert_file = None;
    no_cert.key_file = None;
    let e = first_error(&no_cert).await.to_string();
    eprintln!("without a client certificate: {e}");
    assert!(
        e.contains("give --store-cert-file and --store-key"),
        "unclear error without a client certificate: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_tls_verify_without_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());

    // etcd with client certificate auth: the client certificate is still sent.
    let etcd = TlsEtcd::start(&certs, true);
    etcd.wait_ready(&certs).await;
    let mut skip = full_config(&etcd, &certs, "skip");
    skip.ca_file = None;
    skip.skip_tls_verify = true;
    exercise(&Store::connect(&skip).await.unwrap()).await;

    // A CA that did not sign the server certificate is not consulted either.
    skip.ca_file = Some(certs_in(dir.path(), "other").ca_cert);
    skip.cluster_name = "skip-other-ca".into();
    exercise(&Store::connect(&skip).await.unwrap()).await;

    // etcd without client certificate auth: no TLS file at all.
    let open = TlsEtcd::start(&certs, false);
    open.wait_ready(&certs).await;
    let mut bare = config(&open, "bare");
    bare.skip_tls_verify = true;
    exercise(&Store::connect(&bare).await.unwrap()).await;
    // ... which without skipping is refused for want of the CA.
    bare.skip_tls_verify = false;
    let e = first_error(&bare).await.to_string();
    assert!(e.contains("not trusted"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_name_is_verified_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    // Linux routes all of 127.0.0.0/8 to lo; the certificate names only 127.0.0.1.
    let etcd = TlsEtcd::start_on("127.0.0.2", &certs, true);
    etcd.wait_ready(&certs).await;
    let mut cfg = full_config(&etcd, &certs, "host");
    let e = first_error(&cfg).await.to_string();
    eprintln!("host not in the certificate: {e}");
    assert!(
        e.contains("does not name the host of the endpoint: check --store-endpoints"),
        "{e}"
    );
    cfg.skip_tls_verify = true;
    exercise(&Store::connect(&cfg).await.unwrap()).await;
}

/// With one endpoint down, requests go to the live one (after at most a failure or two) rather
/// than failing every time the balancer picks the dead one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let etcd = TlsEtcd::start(&certs, true);
    etcd.wait_ready(&certs).await;
    let dead = format!("https://127.0.0.1:{}", support::free_ports(1)[0]);
    let mut cfg = full_config(&etcd, &certs, "dead");
    cfg.endpoints = vec![dead.clone(), etcd.url()];
    let store = Store::connect(&cfg).await.unwrap();
    let mut failures = Vec::new();
    for _ in 0..40 {
        if let Err(e) = store.get_cluster_data_raw().await {
            failures.push(e.to_string());
        }
    }
    assert!(
        failures.len() <= 2,
        "{} of 40 requests failed with {dead} down: {failures:?}",
        failures.len()
    );
}

#[tokio::test]
async fn unusable_tls_files_are_refused_at_connect() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    // No etcd needed: the files are checked before any connection.
    let cfg = StoreConfig {
        endpoints: vec!["https://127.0.0.1:9".into()],
        ca_file: Some(certs.ca_cert.clone()),
        cert_file: Some(certs.client_cert.clone()),
        key_file: Some(certs.client_key.clone()),
        ..StoreConfig {
            backend: StoreBackend::Etcdv3,
            endpoints: vec![],
            timeout: Duration::from_secs(1),
            prefix: "stolon/cluster".into(),
            cluster_name: "files".into(),
            cert_file: None,
            key_file: None,
            ca_file: None,
            skip_tls_verify: false,
            credentials: None,
        }
    };
    let connect_err = |cfg: StoreConfig| async move {
        match Store::connect(&cfg).await {
            Ok(_) => panic!("connect accepted {cfg:?}"),
            Err(e) => e.to_string(),
        }
    };

    let mut c = cfg.clone();
    c.key_file = Some(certs.server_key.clone());
    let e = connect_err(c).await;
    assert!(
        e.contains("is not the private key of --store-cert-file"),
        "{e}"
    );

    let mut c = cfg.clone();
    c.ca_file = Some(certs.client_key.clone());
    let e = connect_err(c).await;
    assert!(
        e.contains("--store-ca-file") && e.contains("client.key"),
        "{e}"
    );

    let mut c = cfg.clone();
    c.cert_file = Some(certs.client_key.clone());
    let e = connect_err(c).await;
    assert!(e.contains("--store-cert-file"), "{e}");

    let mut c = cfg.clone();
    c.key_file = Some(certs.client_cert.clone());
    let e = connect_err(c).await;
    assert!(e.contains("--store-key") && e.contains("client.pem"), "{e}");

    // The same files are accepted (connect does not need etcd up).
    Store::connect(&cfg).await.unwrap();
}
