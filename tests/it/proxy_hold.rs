//! `--hold-timeout` on a real etcd: a client arriving while masterDbUid is empty waits for the
//! master the sentinel publishes next, is closed when none comes within the bound, and is
//! closed at once when the proxy fails closed; `--hold-timeout 0` closes it at once.

use crate::proxy_etcd::{
    Proxy, backend, cluster_data, enable_proxy, is_closed, proxy_config, set_master,
    start_proxy_with,
};
use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use stolon::cluster::ClusterData;
use stolon::metrics::Metrics;
use stolon::proxy::ProxyConfig;
use stolon::store::{Store, StoreConfig};
use support::etcd::store_config;
use support::{Etcd, free_port, wait_until_async};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(20);

/// A cluster without a master yet (`proxy.spec.masterDbUid` empty) in etcd, and a proxy of it
/// holding clients for `hold`, enabled by the "sentinel".
async fn proxy_without_master(
    etcd: &Etcd,
    cluster: &str,
    hold: Duration,
    metrics: Metrics,
) -> (Store, ClusterData, Proxy, SocketAddr) {
    let sc: StoreConfig = store_config(&etcd.endpoint(), cluster, Duration::from_secs(1));
    let store = Store::connect(&sc).await.unwrap();
    let mut cd = cluster_data("300ms", "1500ms");
    wait_until_async(DEADLINE, "etcd up", || async {
        store.put_cluster_data(&cd).await.is_ok()
    })
    .await;
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg = ProxyConfig {
        hold_timeout: hold,
        ..proxy_config(port)
    };
    let p = start_proxy_with(sc, cfg, None, metrics);
    enable_proxy(&store, &mut cd).await;
    (store, cd, p, addr)
}

/// Connects and sends a first byte, as a PostgreSQL client sends its StartupMessage.
async fn speak(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"?").await.unwrap();
    s
}

/// The backend's greeting, once the proxy forwarded the client's first byte.
async fn greeted(s: &mut TcpStream) -> String {
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(DEADLINE, s.read(&mut b))
        .await
        .expect("no greeting")
        .unwrap();
    assert_eq!(n, 1, "the proxy closed the held client");
    String::from_utf8_lossy(&b).into_owned()
}

fn counter(metrics: &Metrics, series: &str) -> f64 {
    let text = metrics.render().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_client_gets_the_master_published_within_the_bound_or_is_closed_after_it() {
    let etcd = Etcd::start();
    let metrics = Metrics::new();
    let hold = Duration::from_secs(3);
    let (store, mut cd, p, addr) = proxy_without_master(&etcd, "h1", hold, metrics.clone()).await;
    p.wait_status("no master: holding new clients up to 3s")
        .await;

    // Connected and spoken before there is a master; the sentinel publishes one meanwhile.
    let mut client = speak(addr).await;
    assert!(
        !is_closed(&mut client, Duration::from_millis(300)).await,
        "the client was closed instead of held"
    );
    let a = backend("A").await;
    set_master(&mut cd, "dba", a);
    store.put_cluster_data(&cd).await.unwrap();
    assert_eq!(greeted(&mut client).await, "A");
    p.wait_status(&format!("routing to {a}")).await;

    // A failover begins (phase one) and no master follows: closed once the bound passed.
    cd.proxy.spec.master_db_uid.clear();
    cd.proxy.generation.bump();
    store.put_cluster_data(&cd).await.unwrap();
    assert!(
        is_closed(&mut client, Duration::from_secs(5)).await,
        "a session of the old master survived the switch"
    );
    p.wait_status("no master: holding new clients").await;
    let arrived = Instant::now();
    let mut late = speak(addr).await;
    assert!(is_closed(&mut late, Duration::from_secs(10)).await);
    let took = arrived.elapsed();
    assert!(
        took >= hold - Duration::from_millis(100) && took < hold + Duration::from_secs(2),
        "held client closed after {took:?}, the bound is {hold:?}"
    );
    assert_eq!(counter(&metrics, "stolon_proxy_clients_held_total"), 2.0);
    assert_eq!(
        counter(
            &metrics,
            r#"stolon_proxy_clients_refused_total{reason="hold_timeout"}"#
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_closes_held_clients_and_a_zero_hold_closes_at_once() {
    let mut etcd = Etcd::start();
    let (_store, _cd, held_proxy, held_addr) =
        proxy_without_master(&etcd, "h2", Duration::from_secs(60), Metrics::new()).await;
    let (_store, _cd, plain_proxy, plain_addr) =
        proxy_without_master(&etcd, "h3", Duration::ZERO, Metrics::new()).await;
    held_proxy
        .wait_status("no master: holding new clients")
        .await;
    plain_proxy
        .wait_status("no master: refusing connections (no master elected")
        .await;

    let arrived = Instant::now();
    let mut refused = speak(plain_addr).await;
    assert!(is_closed(&mut refused, Duration::from_secs(2)).await);
    let took = arrived.elapsed();
    assert!(took < Duration::from_millis(500), "closed after {took:?}");

    let mut held = speak(held_addr).await;
    assert!(!is_closed(&mut held, Duration::from_millis(300)).await);
    let broke = Instant::now();
    etcd.stop();
    assert!(
        is_closed(&mut held, Duration::from_secs(10)).await,
        "held client still open after the proxy failed closed"
    );
    let took = broke.elapsed();
    // proxyTimeout is 1.5s; the bound of 60s has nothing to do with it.
    assert!(took < Duration::from_secs(6), "closed after {took:?}");
    held_proxy.wait_status("no master: not listening").await;
}
