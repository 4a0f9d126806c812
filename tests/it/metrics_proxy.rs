//! `--metrics-listen-address` on the real stolon-proxy binary against a real etcd: the
//! endpoint answers from start-up, counts the sessions a client opens and closes, shows the
//! store contact; a taken or malformed address is a one-line startup error naming it, and
//! stolonctl accepts the flag and ignores it, as upstream.

use crate::proxy_etcd::{backend, cluster_data, enable_proxy, set_master};
use crate::support;

use std::net::SocketAddr;
use std::time::Duration;
use stolon::store::Store;
use support::cli::{args, assert_one_line_error, run};
use support::etcd::store_config;
use support::procs::{Proc, RunAs};
use support::scrape::{get, metric, scrape, value};
use support::{Etcd, free_ports, wait_for, wait_until, wait_until_async};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(20);

/// A client that speaks first, as PostgreSQL clients do; Some once the backend greeted it
/// through the proxy.
async fn session(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(b"?").await.ok()?;
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut b))
        .await
        .ok()?
        .ok()?;
    (n == 1).then_some(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_metrics_count_sessions_and_store_contact() {
    let etcd = Etcd::start();
    let sc = store_config(&etcd.endpoint(), "m1", Duration::from_secs(2));
    let store = Store::connect(&sc).await.unwrap();
    let master = backend("A").await;
    let mut cd = cluster_data("300ms", "5s");
    set_master(&mut cd, "dba", master);
    wait_until_async(DEADLINE, "etcd up", || async {
        store.put_cluster_data(&cd).await.is_ok()
    })
    .await;

    let [port, metrics_port] = free_ports(2)[..] else {
        unreachable!()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(support::PROXY.as_path());
    cmd.args(etcd.store_flags("m1")).args([
        "--listen-address",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--metrics-listen-address",
        &format!("127.0.0.1:{metrics_port}"),
    ]);
    let _proxy = Proc::spawn("proxy", cmd, &dir.path().join("proxy.log"), RunAs::Me);

    let text = wait_for(DEADLINE, "the metrics endpoint", || scrape(metrics_port));
    let id = r#"stolon_cluster_identifier{cluster_name="m1",component="proxy"}"#;
    assert_eq!(value(&text, id), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "stolon_proxy_sessions_total"),
        Some(0.0),
        "{text}"
    );
    let not_found = get(metrics_port, "/").unwrap_or_default();
    assert!(not_found.starts_with("HTTP/1.0 404"), "{not_found}");

    enable_proxy(&store, &mut cd).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Until the proxy has read the clusterdata that enables it, clients are refused.
    let end = std::time::Instant::now() + DEADLINE;
    let client = loop {
        if let Some(s) = session(addr).await {
            break s;
        }
        assert!(
            std::time::Instant::now() < end,
            "no session through the proxy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = scrape(metrics_port).unwrap_or_default();
    assert_eq!(
        value(&text, "stolon_proxy_sessions_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "stolon_proxy_sessions_active"),
        Some(1.0),
        "{text}"
    );
    let contact = value(&text, "stolon_store_last_success_seconds").unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - contact).abs() < 30.0,
        "store contact {contact}, now {now}"
    );

    // stolonctl takes the flag and ignores it (not even its form is checked), as upstream's.
    let mut ctl_args = etcd.store_flags("m1");
    ctl_args.extend(args(&["--metrics-listen-address", "ignored", "spec"]));
    let out = run(&support::CTL, &ctl_args, None);
    assert!(out.status.success(), "{}", support::cli::stderr(&out));

    drop(client);
    wait_until(DEADLINE, "the session to end in the metrics", || {
        metric(metrics_port, "stolon_proxy_sessions_active") == Some(0.0)
    });
    assert_eq!(
        metric(metrics_port, "stolon_proxy_sessions_total"),
        Some(1.0)
    );
}

#[test]
fn metrics_address_taken_or_malformed_is_a_one_line_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let proxy = |metrics: &str| {
        run(
            &support::PROXY,
            &args(&[
                "--cluster-name",
                "c",
                "--store-backend",
                "etcdv3",
                "--store-endpoints",
                "http://127.0.0.1:1",
                "--metrics-listen-address",
                metrics,
            ]),
            None,
        )
    };
    assert_one_line_error(
        &proxy(&addr),
        &format!("--metrics-listen-address {addr}: cannot listen"),
    );
    assert_one_line_error(&proxy("9100"), "--metrics-listen-address");
}
