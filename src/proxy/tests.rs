//! The proxy against real TCP: a real backend per "master", a port-0 listener, and a cluster
//! source the test controls (clusterdata changes with watch events, a failing or hanging store).

use super::*;
use crate::cluster::{ClusterData, Db, Generation, GoDuration, ProxyInfo};
use crate::store::{StoreError, StoreEvent};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub(super) const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    Up,
    /// Every request fails at once (etcd down).
    Failing,
    /// Every request hangs (etcd frozen with SIGSTOP).
    Hanging,
    /// Reads work, writes fail: etcd's NOSPACE alarm (`nospace: true`) or another refusal.
    ReadOnly {
        nospace: bool,
    },
}

/// A write refusal as the store reports it.
fn write_refused(nospace: bool) -> StoreError {
    let (code, message) = if nospace {
        (
            tonic::Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded",
        )
    } else {
        (
            tonic::Code::PermissionDenied,
            "etcdserver: permission denied",
        )
    };
    StoreError::Request {
        what: "put proxy info".into(),
        kind: if nospace {
            crate::store::RequestFailure::NoSpace
        } else {
            crate::store::RequestFailure::Other
        },
        detail: message.into(),
        source: etcd_client::Error::GRpcStatus(tonic::Status::new(code, message)),
    }
}

struct MemState {
    cd: Option<ClusterData>,
    health: Health,
    /// How long each publish takes to answer once stored (a slow store), to widen the window
    /// of a route switch.
    publish_delay: Duration,
    infos: BTreeMap<String, ProxyInfo>,
    watchers: Vec<mpsc::Sender<StoreEvent>>,
}

#[derive(Clone)]
pub(super) struct TestSource(Arc<Mutex<MemState>>);

impl TestSource {
    pub(super) fn new(cd: Option<ClusterData>) -> Self {
        TestSource(Arc::new(Mutex::new(MemState {
            cd,
            health: Health::Up,
            publish_delay: Duration::ZERO,
            infos: BTreeMap::new(),
            watchers: Vec::new(),
        })))
    }
    pub(super) fn set_health(&self, h: Health) {
        self.0.lock().unwrap().health = h;
    }
    pub(super) fn set_publish_delay(&self, d: Duration) {
        self.0.lock().unwrap().publish_delay = d;
    }
    pub(super) fn update_cd(&self, f: impl FnOnce(&mut ClusterData)) {
        let watchers = {
            let mut st = self.0.lock().unwrap();
            f(st.cd.as_mut().unwrap());
            st.watchers.clone()
        };
        for w in watchers {
            let _ = w.try_send(StoreEvent::ClusterData);
        }
    }
    fn set_cd(&self, cd: ClusterData) {
        self.0.lock().unwrap().cd = Some(cd);
        self.update_cd(|_| {});
    }
    /// The clusterdata now.
    pub(super) fn cluster(&self) -> ClusterData {
        self.0.lock().unwrap().cd.clone().unwrap()
    }
    pub(super) fn info(&self) -> Option<ProxyInfo> {
        self.0.lock().unwrap().infos.values().next().cloned()
    }
    async fn gate(&self) -> Result<(), StoreError> {
        let h = self.0.lock().unwrap().health;
        match h {
            Health::Up | Health::ReadOnly { .. } => Ok(()),
            Health::Failing => Err(StoreError::Timeout(std::time::Duration::from_secs(1))),
            Health::Hanging => std::future::pending().await,
        }
    }
}

impl ClusterSource for TestSource {
    async fn cluster_data(&self) -> Result<Option<ClusterData>, StoreError> {
        self.gate().await?;
        Ok(self.0.lock().unwrap().cd.clone())
    }
    async fn publish(&self, info: &ProxyInfo, _ttl: Duration) -> Result<(), StoreError> {
        self.gate().await?;
        if let Health::ReadOnly { nospace } = self.0.lock().unwrap().health {
            return Err(write_refused(nospace));
        }
        let delay = {
            let mut st = self.0.lock().unwrap();
            st.infos.insert(info.uid.clone(), info.clone());
            st.publish_delay
        };
        // Stored, then slow to answer: the sentinel may see the info before the proxy goes on.
        tokio::time::sleep(delay).await;
        Ok(())
    }
    async fn watch(&self) -> Result<mpsc::Receiver<StoreEvent>, StoreError> {
        self.gate().await?;
        let (tx, rx) = mpsc::channel(16);
        self.0.lock().unwrap().watchers.push(tx);
        Ok(rx)
    }
}

/// A stand-in PostgreSQL: answers a client's first byte with its name, then echoes.
pub(super) async fn backend(name: &'static str) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                if !matches!(s.read(&mut first).await, Ok(1)) {
                    return;
                }
                if s.write_all(name.as_bytes()).await.is_err() {
                    return;
                }
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, task)
}

pub(super) fn cluster_data(check: GoDuration, timeout: GoDuration) -> ClusterData {
    let mut cd: ClusterData = serde_json::from_str(
        r#"{"formatVersion":1,"cluster":{"uid":"c1","generation":1,"spec":{"initMode":"new"},"status":{}}}"#,
    )
    .unwrap();
    cd.cluster.spec.proxy_check_interval = Some(check);
    cd.cluster.spec.proxy_timeout = Some(timeout);
    cd.proxy.generation = Generation::new(1);
    cd
}

/// Makes `uid` the master at `addr` and bumps the proxy generation, as the sentinel does.
pub(super) fn set_master(cd: &mut ClusterData, uid: &str, addr: SocketAddr) {
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

pub(super) struct Running {
    pub(super) addr: SocketAddr,
    pub(super) shutdown: CancellationToken,
    pub(super) status: watch::Receiver<String>,
    pub(super) task: JoinHandle<Result<(), ProxyError>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub(super) fn config(port: u16) -> ProxyConfig {
    ProxyConfig {
        listen_address: "127.0.0.1".into(),
        port,
        stop_listening: true,
        tcp_keepalive_idle: 30,
        tcp_keepalive_count: 3,
        tcp_keepalive_interval: 5,
        max_connections: 0,
        client_startup_timeout: Duration::from_secs(60),
        // Upstream's behaviour, which most tests here check; hold_tests.rs sets its own.
        hold_timeout: Duration::ZERO,
        read_only_listen_address: None,
        read_only_port: None,
        read_only_fallback_master: false,
        kernel_forwarding: false,
    }
}

pub(super) fn start_handed(source: &TestSource) -> Running {
    start_handed_with(source, config(0))
}

pub(super) fn start_handed_with(source: &TestSource, cfg: ProxyConfig) -> Running {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    start(source, cfg, Some(l), addr)
}

pub(super) fn start(
    source: &TestSource,
    cfg: ProxyConfig,
    l: Option<std::net::TcpListener>,
    addr: SocketAddr,
) -> Running {
    let handed = Handed {
        read_write: l.into_iter().collect(),
        read_only: Vec::new(),
    };
    start_notifying(source, cfg, handed, addr, Notifier::disabled())
}

/// `addr`: where the test reaches the proxy's read-write side.
pub(super) fn start_notifying(
    source: &TestSource,
    cfg: ProxyConfig,
    handed: Handed,
    addr: SocketAddr,
    notifier: Notifier,
) -> Running {
    let shutdown = CancellationToken::new();
    let (tx, status) = watch::channel(String::new());
    let task = tokio::spawn(run_with_source(
        cfg,
        source.clone(),
        handed,
        shutdown.clone(),
        tx,
        Arc::new(notifier),
        Default::default(),
    ));
    Running {
        addr,
        shutdown,
        status,
        task,
    }
}

pub(super) async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) async fn wait_status(p: &Running, prefix: &str) {
    let status = p.status.clone();
    wait_for(&format!("status {prefix:?}"), || {
        status.borrow().starts_with(prefix)
    })
    .await;
}

/// Plays the sentinel: waits for the proxy's info, then enables it.
pub(super) async fn enable_proxy(source: &TestSource) -> String {
    wait_for("proxy info", || source.info().is_some()).await;
    let uid = source.info().unwrap().uid;
    source.update_cd(|cd| cd.proxy.spec.enabled_proxies = vec![uid.clone()]);
    uid
}

/// Connects, speaks first as PostgreSQL clients do, and returns the greeting of the backend the
/// proxy chose.
pub(super) async fn session(addr: SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"?").await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
        .await
        .expect("no greeting through the proxy")
        .unwrap();
    assert_eq!(n, 1, "proxy closed the session instead of routing it");
    (s, String::from_utf8_lossy(&buf).into_owned())
}

/// The peer closed (EOF or reset) within the deadline.
pub(super) async fn assert_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(DEADLINE, s.read(&mut buf))
        .await
        .expect("session still open");
    assert!(matches!(r, Ok(0) | Err(_)), "expected closed, read {r:?}");
}

pub(super) async fn assert_refused_after_accept(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("the proxy must keep accepting");
    assert_closed(&mut s).await;
}

pub(super) fn fast() -> ClusterData {
    cluster_data(GoDuration::from_millis(100), GoDuration::from_millis(600))
}

#[tokio::test]
async fn sessions_are_proxied_to_the_master_once_enabled() {
    let (a, _ba) = backend("A").await;
    let mut cd = fast();
    set_master(&mut cd, "dba", a);
    let source = TestSource::new(Some(cd));
    let p = start_handed(&source);

    // Master known but this proxy not yet enabled: refuse.
    wait_status(&p, "no master: refusing connections").await;
    assert_refused_after_accept(p.addr).await;

    wait_for("proxy info", || source.info().is_some()).await;
    let first = source.info().unwrap();
    assert_eq!(first.generation, Generation::new(2));
    assert_eq!(
        first.proxy_timeout_ns, 15_000_000_000,
        "announces max(running timer 15s, spec 600ms)"
    );
    let uid = enable_proxy(&source).await;
    assert_eq!(uid.len(), 8);
    wait_status(&p, &format!("routing to {a}")).await;
    let (mut s, who) = session(p.addr).await;
    assert_eq!(who, "A");
    s.write_all(b"select 1").await.unwrap();
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"select 1");
    let info = source.info().unwrap();
    assert_eq!(info.proxy_timeout_ns, 600_000_000, "spec timeout adopted");
}

#[tokio::test]
async fn master_change_closes_sessions_before_acknowledging_and_routes_to_the_new_master() {
    let (a, _ba) = backend("A").await;
    let (b, _bb) = backend("B").await;
    // Slow polling: only the watch can make the switch fast.
    let mut cd = cluster_data(GoDuration::from_secs(10), GoDuration::from_secs(30));
    set_master(&mut cd, "dba", a);
    let source = TestSource::new(Some(cd));
    let p = start_handed(&source);
    enable_proxy(&source).await;
    wait_status(&p, &format!("routing to {a}")).await;
    let (mut old, who) = session(p.addr).await;
    assert_eq!(who, "A");

    // Phase one: the sentinel clears the master and waits for our generation.
    source.update_cd(|cd| {
        cd.proxy.spec.master_db_uid.clear();
        cd.proxy.generation.bump();
    });
    let gen_cleared = source
        .0
        .lock()
        .unwrap()
        .cd
        .as_ref()
        .unwrap()
        .proxy
        .generation;
    wait_for("generation ack", || {
        source.info().unwrap().generation == gen_cleared
    })
    .await;
    // Acknowledged, so the session to A must already be gone.
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_millis(300), old.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "old session still open after ack: {r:?}"
    );
    assert_refused_after_accept(p.addr).await;

    // Phase two: the new master, learnt from the watch.
    let changed = Instant::now();
    source.update_cd(|cd| set_master(cd, "dbb", b));
    wait_status(&p, &format!("routing to {b}")).await;
    assert!(
        changed.elapsed() < Duration::from_secs(1),
        "switch took {:?}",
        changed.elapsed()
    );
    let (_new, who) = session(p.addr).await;
    assert_eq!(who, "B");
}

#[tokio::test]
async fn direct_master_change_also_closes_old_sessions() {
    let (a, _ba) = backend("A").await;
    let (b, _bb) = backend("B").await;
    let mut cd = fast();
    set_master(&mut cd, "dba", a);
    let source = TestSource::new(Some(cd));
    let p = start_handed(&source);
    enable_proxy(&source).await;
    wait_status(&p, &format!("routing to {a}")).await;
    let (mut s1, _) = session(p.addr).await;
    let (mut s2, _) = session(p.addr).await;
    source.update_cd(|cd| set_master(cd, "dbb", b));
    assert_closed(&mut s1).await;
    assert_closed(&mut s2).await;
    wait_status(&p, &format!("routing to {b}")).await;
    assert_eq!(session(p.addr).await.1, "B");
}

#[tokio::test]
async fn without_clusterdata_connections_are_accepted_then_closed() {
    let source = TestSource::new(None);
    let p = start_handed(&source);
    wait_status(&p, "no master: refusing connections (no clusterdata").await;
    assert_refused_after_accept(p.addr).await;
    assert!(
        source.info().is_none(),
        "nothing to acknowledge without clusterdata"
    );
}

#[tokio::test]
async fn invalid_clusterdata_refuses_clients_and_is_not_acknowledged() {
    let (a, _ba) = backend("A").await;
    let mut cd = fast();
    set_master(&mut cd, "dba", a);
    cd.format_version = 2;
    let source = TestSource::new(Some(cd));
    let p = start_handed(&source);
    wait_status(
        &p,
        "no master: refusing connections (clusterdata formatVersion 2",
    )
    .await;
    assert_refused_after_accept(p.addr).await;
    assert!(source.info().is_none());
}

async fn fail_closed_on(health: Health) {
    let (a, _ba) = backend("A").await;
    let mut cd = fast();
    set_master(&mut cd, "dba", a);
    let source = TestSource::new(Some(cd));
    let p = start_handed(&source);
    enable_proxy(&source).await;
    wait_status(&p, &format!("routing to {a}")).await;
    let (mut s, _) = session(p.addr).await;

    let broke = Instant::now();
    source.set_health(health);
    assert_closed(&mut s).await;
    let took = broke.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "closed after {took:?}, proxyTimeout is 600ms"
    );
    wait_status(
        &p,
        "no master: refusing connections (no successful store check",
    )
    .await;
    // A handed socket is never closed: clients are accepted and closed.
    assert_refused_after_accept(p.addr).await;

    source.set_health(Health::Up);
    wait_status(&p, &format!("routing to {a}")).await;
    assert_eq!(session(p.addr).await.1, "A");
}

#[tokio::test]
async fn a_full_store_keeps_the_route_but_other_publish_failures_fail_closed() {
    let (a, _ba) = backend("A").await;
    let mut cd = fast();
    set_master(&mut cd, "dba", a);
    let source = TestSource::new(Some(cd));
    let p = start_handed(&source);
    enable_proxy(&source).await;
    wait_status(&p, &format!("routing to {a}")).await;
    let (mut s, _) = session(p.addr).await;

    // NOSPACE: reads work, so the route follows the clusterdata, well past proxyTimeout.
    source.set_health(Health::ReadOnly { nospace: true });
    let published = source.info().unwrap().info_uid;
    let end = Instant::now() + Duration::from_millis(1800);
    while Instant::now() < end {
        let status = p.status.borrow().clone();
        assert!(status.starts_with(&format!("routing to {a}")), "{status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        source.info().unwrap().info_uid,
        published,
        "nothing published"
    );
    assert_eq!(session(p.addr).await.1, "A");
    // And the clusterdata is still followed: a master change closes the old sessions.
    source.update_cd(|cd| {
        cd.proxy.spec.master_db_uid.clear();
        cd.proxy.generation.bump();
    });
    assert_closed(&mut s).await;
    wait_status(&p, "no master").await;
    source.update_cd(|cd| {
        cd.proxy.spec.master_db_uid = "dba".into();
        cd.proxy.generation.bump();
    });
    wait_status(&p, &format!("routing to {a}")).await;

    // Any other write refusal while a master is defined fails the check (upstream's rule).
    let (mut s, _) = session(p.addr).await;
    source.set_health(Health::ReadOnly { nospace: false });
    assert_closed(&mut s).await;
    wait_status(
        &p,
        "no master: refusing connections (no successful store check",
    )
    .await;
    source.set_health(Health::Up);
    wait_status(&p, &format!("routing to {a}")).await;
}

#[tokio::test]
async fn fails_closed_after_proxy_timeout_when_the_store_fails() {
    fail_closed_on(Health::Failing).await;
}

#[tokio::test]
async fn fails_closed_after_proxy_timeout_when_the_store_hangs() {
    fail_closed_on(Health::Hanging).await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect(addr).await, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

#[tokio::test]
async fn owned_socket_listens_only_after_a_store_read_and_closes_while_failing() {
    let (a, _ba) = backend("A").await;
    let mut cd = fast();
    set_master(&mut cd, "dba", a);
    let source = TestSource::new(Some(cd));
    source.set_health(Health::Failing);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let p = start(&source, config(port), None, addr);

    wait_status(&p, "no master: not listening").await;
    assert!(refused(addr).await, "listening before reaching the store");

    source.set_health(Health::Up);
    enable_proxy(&source).await;
    wait_status(&p, &format!("routing to {a}")).await;
    assert_eq!(session(addr).await.1, "A");

    source.set_health(Health::Failing);
    wait_status(&p, "no master: not listening (no successful store check").await;
    assert!(refused(addr).await, "still listening while failing closed");

    source.set_health(Health::Up);
    wait_status(&p, &format!("routing to {a}")).await;
    assert_eq!(session(addr).await.1, "A");
}

#[tokio::test]
async fn a_port_in_use_at_start_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let source = TestSource::new(None);
    let mut p = start(&source, config(port), None, taken.local_addr().unwrap());
    let r = tokio::time::timeout(DEADLINE, &mut p.task)
        .await
        .expect("proxy kept running without its port")
        .unwrap();
    let e = r.expect_err("bind must fail");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[tokio::test]
async fn shutdown_closes_sessions_and_returns_ok() {
    let (a, _ba) = backend("A").await;
    let mut cd = fast();
    set_master(&mut cd, "dba", a);
    let source = TestSource::new(Some(cd));
    let mut p = start_handed(&source);
    enable_proxy(&source).await;
    wait_status(&p, &format!("routing to {a}")).await;
    let (mut s, _) = session(p.addr).await;
    p.shutdown.cancel();
    tokio::time::timeout(DEADLINE, &mut p.task)
        .await
        .expect("proxy did not stop")
        .unwrap()
        .unwrap();
    assert_closed(&mut s).await;
}

#[tokio::test]
async fn client_sockets_inherit_keepalive_and_nodelay_from_the_listener() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    session::Keepalive {
        idle_secs: 30,
        interval_secs: 0,
        count: 4,
    }
    .apply_to_listener(&l)
    .unwrap();
    l.set_nonblocking(true).unwrap();
    let l = TcpListener::from_std(l).unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    let sock = socket2::SockRef::from(&s);
    assert!(sock.tcp_nodelay().unwrap());
    assert!(sock.keepalive().unwrap());
    assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
    assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
    drop(c);
}

/// Socket activation: the client whose connection started the proxy waits in the backlog while
/// the sentinel enables this new proxy, and is then served rather than closed.
#[tokio::test]
async fn an_activated_socket_holds_clients_until_the_proxy_is_enabled() {
    let (a, _ba) = backend("A").await;
    let mut cd = cluster_data(GoDuration::from_millis(100), GoDuration::from_secs(10));
    set_master(&mut cd, "dba", a);
    let source = TestSource::new(Some(cd));
    let p = start_handed(&source);
    let early = tokio::spawn(session(p.addr));
    wait_status(&p, "no master: not listening (this proxy").await;
    enable_proxy(&source).await;
    assert_eq!(early.await.unwrap().1, "A");
}

/// The sd_notify datagrams a test socket received.
struct NotifySocket {
    _dir: tempfile::TempDir,
    sock: tokio::net::UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            _dir: dir,
            sock,
            path,
        }
    }

    /// Messages until one contains `needle` (returned last), failing at the deadline.
    async fn until(&self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let end = Instant::now() + DEADLINE;
        loop {
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout_at(end, self.sock.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in {seen:?}"))
                .unwrap();
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let found = msg.contains(needle);
            seen.push(msg);
            if found {
                return seen;
            }
        }
    }
}

#[tokio::test]
async fn ready_only_with_clusterdata_watchdog_from_the_loop_stopping_at_shutdown() {
    let notify = NotifySocket::bind();
    let period = Duration::from_millis(800);
    let notifier = Notifier::new(Some(notify.path.as_os_str()), Some(period));
    let source = TestSource::new(None);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let handed = Handed {
        read_write: vec![l],
        read_only: Vec::new(),
    };
    let mut p = start_notifying(&source, config(0), handed, addr, notifier);

    let before = notify
        .until("STATUS=no master: refusing connections (no clusterdata")
        .await;
    // The check interval is 5 s, yet the loop pings every quarter period.
    let more = notify.until("WATCHDOG=1").await;
    let more2 = notify.until("WATCHDOG=1").await;
    let all: Vec<_> = before.iter().chain(&more).chain(&more2).collect();
    assert!(!all.iter().any(|m| m.contains("READY=1")), "{all:?}");

    let mut cd = fast();
    let (a, _ba) = backend("A").await;
    set_master(&mut cd, "dba", a);
    source.set_cd(cd);
    let ready = notify.until("READY=1").await;
    assert!(
        ready.last().unwrap().contains("STATUS=no master"),
        "{ready:?}"
    );

    p.shutdown.cancel();
    notify.until("STOPPING=1").await;
    tokio::time::timeout(DEADLINE, &mut p.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
