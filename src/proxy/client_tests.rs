//! The proxy under many or misbehaving clients: the session limit, idle clients that never reach
//! the master, and sessions the master ends while the client stays silent.

use super::tests::{
    DEADLINE, Running, TestSource, assert_closed, backend, config, enable_proxy, fast, session,
    set_master, start, wait_for, wait_status,
};
use super::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A stand-in PostgreSQL that counts the connections it accepted and the sessions that ended
/// (it saw the client's EOF or hung up), and, when `hang_up`, closes each session right after
/// answering the client's first byte.
async fn counting_backend(hang_up: bool) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let (accepted_here, ended_here) = (accepted.clone(), ended.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            accepted_here.fetch_add(1, Ordering::SeqCst);
            let ended = ended_here.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                if matches!(s.read(&mut first).await, Ok(1))
                    && s.write_all(b"B").await.is_ok()
                    && !hang_up
                {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, accepted, ended)
}

/// A handed-socket proxy with `cfg`, enabled and routing to a master at `master`.
async fn routing_proxy(master: SocketAddr, cfg: ProxyConfig) -> (TestSource, Running) {
    let mut cd = fast();
    set_master(&mut cd, "dba", master);
    let source = TestSource::new(Some(cd));
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let p = start(&source, cfg, Some(l), addr);
    enable_proxy(&source).await;
    wait_status(&p, &format!("routing to {master}")).await;
    (source, p)
}

#[tokio::test]
async fn past_max_connections_new_clients_are_closed_and_served_again_once_one_leaves() {
    let (a, _ba) = backend("A").await;
    let cfg = ProxyConfig {
        max_connections: 2,
        ..config(0)
    };
    let (_source, p) = routing_proxy(a, cfg).await;
    let (first, _) = session(p.addr).await;
    let (_second, _) = session(p.addr).await;
    let mut third = TcpStream::connect(p.addr).await.unwrap();
    let _ = third.write_all(b"?").await;
    assert_closed(&mut third).await;

    drop(first);
    // The proxy notices the first client's EOF and frees its place.
    assert_eq!(served_once_a_place_is_free(p.addr).await, b'A');
}

#[tokio::test]
async fn a_session_the_master_ends_is_closed_on_the_client_side_too() {
    let (b, _, _) = counting_backend(true).await;
    // One session at a time: a second client is served only if the first one's session is
    // over, although that client never closes its side.
    let cfg = ProxyConfig {
        max_connections: 1,
        ..config(0)
    };
    let (_source, p) = routing_proxy(b, cfg).await;
    let (mut silent, who) = session(p.addr).await;
    assert_eq!(who, "B");
    assert_closed(&mut silent).await;
    // The place is freed just after the client's socket closes, and the next client may reach
    // another session thread first: it is served within the deadline, not necessarily at once.
    assert_eq!(served_once_a_place_is_free(p.addr).await, b'B');
    drop(silent);
}

#[tokio::test]
async fn silent_clients_never_reach_the_master_and_are_closed_after_the_startup_timeout() {
    let (b, accepted, _) = counting_backend(false).await;
    let cfg = ProxyConfig {
        client_startup_timeout: Duration::from_millis(300),
        ..config(0)
    };
    let (_source, p) = routing_proxy(b, cfg).await;
    let mut silent = TcpStream::connect(p.addr).await.unwrap();
    assert_closed(&mut silent).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "a silent client reached the master"
    );
    let (_s, who) = session(p.addr).await;
    assert_eq!(who, "B");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn two_thousand_idle_clients_cost_the_master_no_connection() {
    // Each idle client takes two descriptors here (its socket and the proxy's).
    let _ = limits::raise_open_file_limit();
    let (b, accepted, _) = counting_backend(false).await;
    let (_source, p) = routing_proxy(b, config(0)).await;
    let mut idle = Vec::new();
    for _ in 0..2000 {
        idle.push(TcpStream::connect(p.addr).await.unwrap());
    }
    let (_s, who) = session(p.addr).await;
    assert_eq!(who, "B");
    wait_for("the fresh client's session", || {
        accepted.load(Ordering::SeqCst) >= 1
    })
    .await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "idle clients reached the master"
    );
    drop(idle);
}

/// `--kernel-forwarding` (needs CAP_BPF and CAP_NET_ADMIN: the tests run as root): the same
/// sessions, with the bytes moved by the kernel and only their ends seen by the proxy.
#[cfg(feature = "kernel-forwarding")]
#[tokio::test]
async fn kernel_forwarding_carries_sessions_ends_them_with_the_master_and_cuts_them_on_a_switch() {
    let (echo, _, echo_ended) = counting_backend(false).await;
    let (closer, _, _) = counting_backend(true).await;
    let cfg = ProxyConfig {
        kernel_forwarding: true,
        ..config(0)
    };
    let (source, p) = routing_proxy(echo, cfg).await;
    let (mut s, who) = session(p.addr).await;
    assert_eq!(who, "B");
    for round in 0..100u32 {
        let msg = round.to_be_bytes();
        s.write_all(&msg).await.unwrap();
        let mut back = [0u8; 4];
        tokio::time::timeout(DEADLINE, s.read_exact(&mut back))
            .await
            .expect("no echo through the kernel")
            .unwrap();
        assert_eq!(back, msg);
    }

    // A client leaving ends its session on the master's side too.
    let (other, _) = session(p.addr).await;
    drop(other);
    wait_for(
        "the master's side of a closed client's session to end",
        || echo_ended.load(Ordering::SeqCst) == 1,
    )
    .await;

    // A master change cuts the session.
    source.update_cd(|cd| set_master(cd, "dbc", closer));
    assert_closed(&mut s).await;
    wait_status(&p, &format!("routing to {closer}")).await;
    // The master ending a session closes the client's side too.
    let (mut s, who) = session(p.addr).await;
    assert_eq!(who, "B");
    assert_closed(&mut s).await;
}

/// The backend's first byte for a new client, retried until the deadline: a place is freed
/// just after a client's socket closes, and the next client may reach another session thread
/// first.
async fn served_once_a_place_is_free(addr: std::net::SocketAddr) -> u8 {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(b"?").await;
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b).await, Ok(1)) {
            return b[0];
        }
        assert!(tokio::time::Instant::now() < end, "no place freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
