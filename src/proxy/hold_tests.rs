//! `--hold-timeout`: clients that arrive while a master is on its way wait for it, and only
//! for it: never past the bound, never through a fail-closed, an invalid clusterdata or a
//! shutdown, never to the old master of a switch.

use super::tests::{
    DEADLINE, Health, Running, TestSource, assert_closed, backend, cluster_data, config,
    enable_proxy, fast, session, set_master, start_handed_with, wait_status,
};
use super::*;
use crate::cluster::GoDuration;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

fn holding(hold_timeout: Duration) -> ProxyConfig {
    ProxyConfig {
        hold_timeout,
        ..config(0)
    }
}

/// A proxy enabled by the sentinel in a cluster whose master is not elected yet.
async fn proxy_without_master(hold_timeout: Duration) -> (TestSource, Running) {
    let source = TestSource::new(Some(fast()));
    let p = start_handed_with(&source, holding(hold_timeout));
    enable_proxy(&source).await;
    (source, p)
}

/// A client that connects and sends its first byte, as PostgreSQL clients do.
async fn speaking_client(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"?").await.unwrap();
    s
}

#[tokio::test]
async fn a_client_held_without_a_master_is_served_by_the_one_published_within_the_bound() {
    let (a, _ba) = backend("A").await;
    let (source, p) = proxy_without_master(Duration::from_secs(5)).await;
    wait_status(
        &p,
        "no master: holding new clients up to 5s (no master elected",
    )
    .await;
    let held = tokio::spawn(session(p.addr));
    // Long enough for the client to be waiting, well inside the bound.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "the held client was closed");
    source.update_cd(|cd| set_master(cd, "dba", a));
    let (_s, who) = held.await.unwrap();
    assert_eq!(who, "A");
}

#[tokio::test]
async fn a_held_client_is_closed_once_the_bound_passes() {
    let (_source, p) = proxy_without_master(Duration::from_millis(500)).await;
    wait_status(&p, "no master: holding new clients").await;
    let started = Instant::now();
    let mut s = speaking_client(p.addr).await;
    assert_closed(&mut s).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "closed after {took:?}, the bound is 500ms"
    );
    // So is one that never speaks: its bound counts from its arrival.
    let started = Instant::now();
    let mut silent = TcpStream::connect(p.addr).await.unwrap();
    assert_closed(&mut silent).await;
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn without_a_hold_timeout_clients_are_closed_at_once() {
    let (_source, p) = proxy_without_master(Duration::ZERO).await;
    wait_status(&p, "no master: refusing connections (no master elected").await;
    let started = Instant::now();
    let mut s = speaking_client(p.addr).await;
    assert_closed(&mut s).await;
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn held_clients_are_closed_at_once_when_the_proxy_fails_closed() {
    let (source, p) = proxy_without_master(Duration::from_secs(30)).await;
    wait_status(&p, "no master: holding new clients").await;
    let mut s = speaking_client(p.addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let broke = Instant::now();
    source.set_health(Health::Failing);
    assert_closed(&mut s).await;
    let took = broke.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "closed after {took:?}: proxyTimeout is 600ms, not the 30s bound"
    );
    wait_status(
        &p,
        "no master: refusing connections (no successful store check",
    )
    .await;
    // And none is held while the store stays unread.
    let started = Instant::now();
    let mut late = speaking_client(p.addr).await;
    assert_closed(&mut late).await;
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn held_clients_are_closed_at_once_on_unsupported_clusterdata() {
    let (source, p) = proxy_without_master(Duration::from_secs(30)).await;
    wait_status(&p, "no master: holding new clients").await;
    let mut s = speaking_client(p.addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    source.update_cd(|cd| cd.format_version = 2);
    let started = Instant::now();
    assert_closed(&mut s).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    wait_status(
        &p,
        "no master: refusing connections (clusterdata formatVersion 2",
    )
    .await;
}

#[tokio::test]
async fn held_clients_are_closed_at_shutdown() {
    let (_source, mut p) = proxy_without_master(Duration::from_secs(30)).await;
    wait_status(&p, "no master: holding new clients").await;
    let mut s = speaking_client(p.addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.shutdown.cancel();
    assert_closed(&mut s).await;
    tokio::time::timeout(DEADLINE, &mut p.task)
        .await
        .expect("proxy did not stop")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn held_clients_count_against_max_connections() {
    let source = TestSource::new(Some(fast()));
    let cfg = ProxyConfig {
        max_connections: 1,
        ..holding(Duration::from_secs(30))
    };
    let p = start_handed_with(&source, cfg);
    enable_proxy(&source).await;
    wait_status(&p, "no master: holding new clients").await;
    let _held = speaking_client(p.addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut over = speaking_client(p.addr).await;
    assert_closed(&mut over).await;
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// The race of a switch: a client arriving while the route goes from the old master to the new
/// one waits, and reaches the new one, never the old.
#[tokio::test]
async fn a_client_arriving_during_a_switch_reaches_the_new_master_only() {
    let (a, _ba) = backend("A").await;
    let (b, _bb) = backend("B").await;
    // A proxyTimeout well above the slow publish below, which must not fail the proxy closed.
    let mut cd = cluster_data(GoDuration::from_millis(100), GoDuration::from_secs(10));
    set_master(&mut cd, "dba", a);
    let source = TestSource::new(Some(cd));
    let p = start_handed_with(&source, holding(Duration::from_secs(5)));
    enable_proxy(&source).await;
    wait_status(&p, &format!("routing to {a}")).await;
    let (mut old, _) = session(p.addr).await;

    // The acknowledgement of the new generation is slow to reach the store: the proxy has cut
    // the old master's sessions and holds new clients meanwhile.
    source.set_publish_delay(Duration::from_millis(800));
    source.update_cd(|cd| set_master(cd, "dbb", b));
    wait_status(&p, "no master: holding new clients up to 5s (switching").await;
    assert_closed(&mut old).await;
    let (_new, who) = session(p.addr).await;
    assert_eq!(who, "B");
    wait_status(&p, &format!("routing to {b}")).await;
}
