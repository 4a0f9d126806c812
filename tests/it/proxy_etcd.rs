//! The proxy on a real etcd: learns masters from the watch, acknowledges the two-phase switch
//! only after closing sessions, fails closed when etcd dies or freezes, and serves again after.

use crate::support;

use etcd_client::{Client, EventType, WatchOptions};
use nix::sys::signal::Signal;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::time::{Duration, Instant};
use stolon::cluster::{ClusterData, Db, GoDuration};
use stolon::metrics::Metrics;
use stolon::proxy::{ProxyConfig, ProxyError, run};
use stolon::role::RoleContext;
use stolon::store::{Store, StoreConfig};
use support::etcd::store_config;
use support::{Etcd, free_port, wait_until_async};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

/// A stand-in PostgreSQL: answers a client's first byte with its name, then echoes.
pub(crate) async fn backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                if matches!(s.read(&mut first).await, Ok(1))
                    && s.write_all(name.as_bytes()).await.is_ok()
                {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    addr
}

pub(crate) fn cluster_data(check: &str, timeout: &str) -> ClusterData {
    serde_json::from_str(&format!(
        r#"{{"formatVersion":1,"cluster":{{"uid":"c1","generation":1,
            "spec":{{"initMode":"new","proxyCheckInterval":"{check}","proxyTimeout":"{timeout}"}},
            "status":{{}}}},"proxy":{{"generation":1,"spec":{{}}}}}}"#
    ))
    .unwrap()
}

/// The sentinel's move: `uid` becomes master at `addr`, generation bumped.
pub(crate) fn set_master(cd: &mut ClusterData, uid: &str, addr: SocketAddr) {
    let mut db = Db {
        uid: uid.into(),
        ..Default::default()
    };
    db.status.listen_address = addr.ip().to_string();
    db.status.port = addr.port().to_string();
    cd.dbs.insert(uid.into(), db);
    cd.proxy.spec.master_db_uid = uid.into();
    cd.proxy.generation.bump();
}

pub(crate) struct Proxy {
    pub(crate) status: watch::Receiver<String>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: JoinHandle<Result<(), ProxyError>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn start_proxy(sc: StoreConfig, port: u16, listener: Option<StdListener>) -> Proxy {
    start_proxy_with(sc, proxy_config(port), listener, Metrics::new())
}

/// The settings of the proxies these tests start: upstream's behaviour (no hold).
pub(crate) fn proxy_config(port: u16) -> ProxyConfig {
    ProxyConfig {
        listen_address: "127.0.0.1".into(),
        port,
        stop_listening: true,
        tcp_keepalive_idle: 0,
        tcp_keepalive_count: 0,
        tcp_keepalive_interval: 0,
        max_connections: 0,
        client_startup_timeout: Duration::from_secs(60),
        hold_timeout: Duration::ZERO,
        read_only_listen_address: None,
        read_only_port: None,
        read_only_fallback_master: false,
        kernel_forwarding: false,
    }
}

pub(crate) fn start_proxy_with(
    sc: StoreConfig,
    cfg: ProxyConfig,
    listener: Option<StdListener>,
    metrics: Metrics,
) -> Proxy {
    let shutdown = CancellationToken::new();
    let ctx = RoleContext::new(sc, shutdown.clone())
        .with_listeners(listener.into_iter().collect())
        .with_metrics(metrics);
    let status = ctx.subscribe_status();
    let task = tokio::spawn(run(cfg, ctx));
    Proxy {
        status,
        shutdown,
        task,
    }
}

impl Proxy {
    pub(crate) async fn wait_status(&self, prefix: &str) {
        let status = self.status.clone();
        wait_until_async(DEADLINE, &format!("status {prefix:?}"), || {
            let ok = status.borrow().starts_with(prefix);
            async move { ok }
        })
        .await;
    }
}

/// Plays the sentinel: waits until the proxy has published its info, then enables it.
pub(crate) async fn enable_proxy(store: &Store, cd: &mut ClusterData) -> String {
    wait_until_async(DEADLINE, "proxy info in etcd", || async {
        store.get_proxies_info().await.is_ok_and(|i| !i.is_empty())
    })
    .await;
    let uid = store
        .get_proxies_info()
        .await
        .unwrap()
        .into_keys()
        .next()
        .unwrap();
    cd.proxy.spec.enabled_proxies = vec![uid.clone()];
    store.put_cluster_data(cd).await.unwrap();
    uid
}

/// Connects, speaks first as PostgreSQL clients do, and returns the backend's greeting.
pub(crate) async fn greeting(addr: SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"?").await.unwrap();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(DEADLINE, s.read(&mut b))
        .await
        .expect("no greeting")
        .unwrap();
    assert_eq!(n, 1, "proxy closed the session instead of routing it");
    (s, String::from_utf8_lossy(&b).into_owned())
}

pub(crate) async fn is_closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 8];
    matches!(
        tokio::time::timeout(within, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn connect_state(addr: SocketAddr) -> &'static str {
    match TcpStream::connect(addr).await {
        Err(_) => "refused",
        Ok(mut s) => {
            if is_closed(&mut s, Duration::from_secs(2)).await {
                "closed"
            } else {
                "open"
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_switch_is_acknowledged_after_closing_and_the_new_master_comes_from_the_watch() {
    let etcd = Etcd::start();
    let sc = store_config(&etcd.endpoint(), "p1", Duration::from_secs(1));
    let store = Store::connect(&sc).await.unwrap();
    let a = backend("A").await;
    let b = backend("B").await;
    // Polling every 10s: only the watch can make the switch fast.
    let mut cd = cluster_data("10s", "30s");
    set_master(&mut cd, "dba", a);
    wait_until_async(DEADLINE, "etcd up", || async {
        store.put_cluster_data(&cd).await.is_ok()
    })
    .await;

    let l = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut p = start_proxy(sc, 0, Some(l));
    let uid = enable_proxy(&store, &mut cd).await;
    p.wait_status(&format!("routing to {a}")).await;
    let (mut old, who) = greeting(addr).await;
    assert_eq!(who, "A");

    // Phase one: master cleared, generation bumped; wait for the proxy's acknowledgement.
    cd.proxy.spec.master_db_uid.clear();
    cd.proxy.generation.bump();
    store.put_cluster_data(&cd).await.unwrap();
    let generation = cd.proxy.generation;
    wait_until_async(DEADLINE, "generation ack", || async {
        store
            .get_proxies_info()
            .await
            .is_ok_and(|i| i.get(&uid).is_some_and(|p| p.generation == generation))
    })
    .await;
    assert!(
        is_closed(&mut old, Duration::from_millis(300)).await,
        "session to the old master open after the acknowledgement"
    );
    assert_eq!(connect_state(addr).await, "closed");

    // Phase two: the new master.
    set_master(&mut cd, "dbb", b);
    store.put_cluster_data(&cd).await.unwrap();
    let written = Instant::now();
    p.wait_status(&format!("routing to {b}")).await;
    let took = written.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "new master routed after {took:?}"
    );
    eprintln!("clusterdata write -> routing to the new master: {took:?}");
    let (mut last, who) = greeting(addr).await;
    assert_eq!(who, "B");

    // Graceful stop: sessions closed, info key gone with the revoked lease.
    p.shutdown.cancel();
    tokio::time::timeout(DEADLINE, &mut p.task)
        .await
        .expect("proxy did not stop")
        .unwrap()
        .unwrap();
    assert!(is_closed(&mut last, Duration::from_secs(2)).await);
    assert!(store.get_proxies_info().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_closed_when_etcd_dies_or_freezes_and_serves_again() {
    let mut etcd = Etcd::start();
    let sc = store_config(&etcd.endpoint(), "p2", Duration::from_secs(1));
    let store = Store::connect(&sc).await.unwrap();
    let a = backend("A").await;
    let mut cd = cluster_data("300ms", "1500ms");
    set_master(&mut cd, "dba", a);
    wait_until_async(DEADLINE, "etcd up", || async {
        store.put_cluster_data(&cd).await.is_ok()
    })
    .await;

    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let p = start_proxy(sc, port, None);
    enable_proxy(&store, &mut cd).await;
    p.wait_status(&format!("routing to {a}")).await;

    for (how, sig) in [("killed", None), ("frozen", Some(Signal::SIGSTOP))] {
        // The bound below assumes the proxy's checks succeed at their pace when the fault
        // comes: right after the store came back, the first checks can be slow (a new
        // connection, a new lease), and the proxy rightly closes sooner. Two publications in a
        // row first.
        for _ in 0..2 {
            let before = store.get_proxies_info().await.unwrap_or_default();
            wait_until_async(DEADLINE, "a proxy publication", || {
                let store = store.clone();
                let before = before.clone();
                async move {
                    store
                        .get_proxies_info()
                        .await
                        .is_ok_and(|now| !now.is_empty() && now != before)
                }
            })
            .await;
        }
        let (mut s, _) = greeting(addr).await;
        let broke = Instant::now();
        match sig {
            None => etcd.stop(),
            Some(sig) => etcd.signal(sig),
        }
        assert!(
            is_closed(&mut s, Duration::from_secs(6)).await,
            "etcd {how}: session still open"
        );
        let took = broke.elapsed();
        assert!(
            took >= Duration::from_millis(1000),
            "etcd {how}: closed after only {took:?}"
        );
        eprintln!("etcd {how}: session closed after {took:?} (proxyTimeout 1.5s)");
        p.wait_status("no master: not listening").await;
        assert_eq!(connect_state(addr).await, "refused", "etcd {how}");

        match sig {
            None => etcd.start_again(),
            Some(_) => etcd.signal(Signal::SIGCONT),
        }
        p.wait_status(&format!("routing to {a}")).await;
        assert_eq!(greeting(addr).await.1, "A", "etcd {how}: back");
    }
}

/// The TTL etcd granted the lease of `key`, and how many leases exist in all.
async fn lease_of(raw: &mut Client, key: &str) -> Option<(i64, usize)> {
    let resp = raw.get(key, None).await.ok()?;
    let lease = resp.kvs().first()?.lease();
    let ttl = raw
        .lease_time_to_live(lease, None)
        .await
        .ok()?
        .granted_ttl();
    let leases = raw.leases().await.ok()?.leases().len();
    Some((ttl, leases))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_info_lease_follows_proxy_timeout_when_the_spec_changes() {
    let etcd = Etcd::start();
    let sc = store_config(&etcd.endpoint(), "p3", Duration::from_secs(1));
    let store = Store::connect(&sc).await.unwrap();
    let a = backend("A").await;
    let mut cd = cluster_data("300ms", "4s");
    set_master(&mut cd, "dba", a);
    wait_until_async(DEADLINE, "etcd up", || async {
        store.put_cluster_data(&cd).await.is_ok()
    })
    .await;
    let port = free_port();
    let p = start_proxy(sc, port, None);
    let uid = enable_proxy(&store, &mut cd).await;
    p.wait_status(&format!("routing to {a}")).await;
    let key = format!("stolon/cluster/p3/proxies/info/{uid}");
    let mut raw = Client::connect([etcd.endpoint()], None).await.unwrap();
    // The first publish announces the default proxyTimeout (15s, the timer running until then:
    // a 30s lease); the next ones the spec's 4s: 2×4s, floored at 20s.
    let (r, k) = (raw.clone(), key.clone());
    wait_until_async(DEADLINE, "lease TTL 20s", move || {
        let (mut r, k) = (r.clone(), k.clone());
        async move { lease_of(&mut r, &k).await == Some((20, 1)) }
    })
    .await;

    // The info key must never vanish while its lease is replaced.
    let mut events = raw
        .watch(key.as_str(), Some(WatchOptions::new().with_prev_key()))
        .await
        .unwrap();

    // proxyTimeout raised to 45s: a cut-off proxy now serves for up to 45s, so its info must
    // stay at least that long (2×45s); a lease fixed at start would expire after 20s.
    for (timeout, ttl) in [("45s", 90), ("2s", 20)] {
        cd.cluster.spec.proxy_timeout = Some(GoDuration::parse(timeout).unwrap());
        store.put_cluster_data(&cd).await.unwrap();
        let raw = raw.clone();
        let key = key.clone();
        wait_until_async(DEADLINE, &format!("lease TTL {ttl}s"), move || {
            let mut raw = raw.clone();
            let key = key.clone();
            async move { lease_of(&mut raw, &key).await == Some((ttl, 1)) }
        })
        .await;
        eprintln!("proxyTimeout {timeout}: info lease TTL {ttl}s, one lease");
    }
    p.wait_status(&format!("routing to {a}")).await;

    // Only puts (publishes, lease moves) on the key, no delete.
    while let Ok(Ok(Some(resp))) =
        tokio::time::timeout(Duration::from_millis(200), events.message()).await
    {
        for ev in resp.events() {
            assert_eq!(ev.event_type(), EventType::Put, "the info key was deleted");
        }
    }
}

/// The infoUID of proxy `uid`'s published info (new on every publish).
async fn info_uid(store: &Store, uid: &str) -> Option<String> {
    let infos = store.get_proxies_info().await.ok()?;
    infos.get(uid).map(|p| p.info_uid.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_routing_while_etcd_is_full_and_publishes_again_once_cleared() {
    let mut etcd = Etcd::reserve();
    // A tiny backend quota: a dozen 100 kB values raise etcd's NOSPACE alarm.
    etcd.extra_args = vec!["--quota-backend-bytes=1048576".into()];
    etcd.start_again();
    let sc = store_config(&etcd.endpoint(), "p4", Duration::from_secs(1));
    let store = Store::connect(&sc).await.unwrap();
    let a = backend("A").await;
    let mut cd = cluster_data("300ms", "1500ms");
    set_master(&mut cd, "dba", a);
    wait_until_async(DEADLINE, "etcd up", || async {
        store.put_cluster_data(&cd).await.is_ok()
    })
    .await;
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let p = start_proxy(sc, port, None);
    let uid = enable_proxy(&store, &mut cd).await;
    p.wait_status(&format!("routing to {a}")).await;
    let (mut session, _) = greeting(addr).await;

    support::etcd::full::fill(&etcd.endpoint()).await;
    let e = store.put_cluster_data(&cd).await.unwrap_err();
    assert!(e.is_no_space(), "{e}");
    eprintln!("etcd full: {e}");
    // The last info that got through: every publish from now on fails (etcd refuses writes
    // applied after the alarm), and the key stays (keep-alive is no write).
    let last = info_uid(&store, &uid).await.expect("proxy info present");

    // Three proxyTimeouts later: still routing (a failed publish does not fail the check while
    // the clusterdata can be read), the old session open, new clients served, and no publish
    // got through.
    let window = Duration::from_millis(4500);
    let end = Instant::now() + window;
    while Instant::now() < end {
        let status = p.status.borrow().clone();
        assert!(status.starts_with(&format!("routing to {a}")), "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !is_closed(&mut session, Duration::from_millis(100)).await,
        "session closed while etcd was only full"
    );
    assert_eq!(greeting(addr).await.1, "A");
    assert_eq!(info_uid(&store, &uid).await.as_ref(), Some(&last));

    // Cleared as an operator would: delete, compact, defragment, disarm. Publishing resumes.
    support::etcd::full::clear(&etcd.endpoint()).await;
    wait_until_async(DEADLINE, "proxy info published again", || async {
        info_uid(&store, &uid).await.is_some_and(|u| u != last)
    })
    .await;
    assert!(!is_closed(&mut session, Duration::from_millis(100)).await);
}
