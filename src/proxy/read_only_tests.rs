//! The read-only listener against real TCP: clients spread over the qualifying standbys, cut
//! when theirs stops qualifying (unhealthy, lagging, promoted), the master as an optional
//! fallback, and everything closed when the proxy fails closed.

use super::tests::{
    Health, Running, TestSource, assert_closed, backend, cluster_data, config, enable_proxy, fast,
    session, start_notifying, wait_for, wait_status,
};
use super::*;
use crate::cluster::{ClusterData, Db, DbRole, FollowConfig, GoDuration, Keeper};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Makes `uid` a healthy db on a healthy keeper at `addr`: the master, or a caught-up standby
/// following `m`.
fn add_db(cd: &mut ClusterData, uid: &str, addr: SocketAddr, master: bool) {
    let keeper = format!("k{uid}");
    let mut db = Db {
        uid: uid.into(),
        ..Default::default()
    };
    db.spec.keeper_uid = keeper.as_str().into();
    db.status.healthy = true;
    db.status.listen_address = addr.ip().to_string();
    db.status.port = addr.port().to_string();
    db.status.x_log_pos = 1_000_000;
    if master {
        db.spec.role = DbRole::Master;
    } else {
        db.spec.role = DbRole::Standby;
        db.spec.follow_config = Some(FollowConfig::internal(&"m".into()));
    }
    cd.dbs.insert(uid.into(), db);
    let mut k = Keeper {
        uid: keeper.as_str().into(),
        ..Default::default()
    };
    k.status.healthy = true;
    cd.keepers.insert(keeper.as_str().into(), k);
}

/// Master `m` (backend "M"), standbys `s1` ("1") and `s2` ("2").
struct Cluster {
    source: TestSource,
    _backends: Vec<tokio::task::JoinHandle<()>>,
}

async fn cluster() -> Cluster {
    cluster_with(fast()).await
}

async fn cluster_with(mut cd: ClusterData) -> Cluster {
    let mut backends = Vec::new();
    for (uid, name, master) in [("m", "M", true), ("s1", "1", false), ("s2", "2", false)] {
        let (addr, task) = backend(name).await;
        backends.push(task);
        add_db(&mut cd, uid, addr, master);
    }
    cd.cluster.status.master = Some("m".into());
    cd.proxy.spec.master_db_uid = "m".into();
    cd.proxy.generation.bump();
    Cluster {
        source: TestSource::new(Some(cd)),
        _backends: backends,
    }
}

impl Cluster {
    fn db(&self, uid: &str, f: impl FnOnce(&mut Db)) {
        self.source
            .update_cd(|cd| f(cd.dbs.get_mut(&uid.into()).unwrap()));
    }
}

/// A proxy with handed read-write and read-only sockets; returns it and its read-only address.
async fn proxy(c: &Cluster, fallback_master: bool) -> (Running, SocketAddr) {
    let rw = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ro = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (rw_addr, ro_addr) = (rw.local_addr().unwrap(), ro.local_addr().unwrap());
    let cfg = ProxyConfig {
        read_only_fallback_master: fallback_master,
        ..config(0)
    };
    let handed = Handed {
        read_write: vec![rw],
        read_only: vec![ro],
    };
    let p = start_notifying(&c.source, cfg, handed, rw_addr, Notifier::disabled());
    enable_proxy(&c.source).await;
    wait_status(&p, "routing to").await;
    (p, ro_addr)
}

async fn status_has(p: &Running, part: &str) {
    let status = p.status.clone();
    wait_for(&format!("status with {part:?}"), || {
        status.borrow().contains(part)
    })
    .await;
}

#[tokio::test]
async fn read_only_clients_are_spread_over_the_standbys_and_writers_still_reach_the_master() {
    let c = cluster().await;
    let (p, ro) = proxy(&c, false).await;
    status_has(&p, "; read-only: to 2 standbys").await;
    let mut seen = Vec::new();
    let mut open = Vec::new();
    for _ in 0..4 {
        let (s, who) = session(ro).await;
        seen.push(who);
        open.push(s);
    }
    seen.sort();
    assert_eq!(seen, ["1", "1", "2", "2"]);
    assert_eq!(session(p.addr).await.1, "M");
    assert!(c.source.info().unwrap().read_only, "readOnly published");
}

#[tokio::test]
async fn a_session_is_cut_when_its_standby_stops_qualifying_and_no_other() {
    let c = cluster().await;
    let (p, ro) = proxy(&c, false).await;
    status_has(&p, "to 2 standbys").await;
    let (first, a) = session(ro).await;
    let (second, b) = session(ro).await;
    let (mut on_s1, mut on_s2) = if a == "1" {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(
        [a.as_str(), b.as_str()]
            .iter()
            .filter(|w| **w == "1")
            .count(),
        1
    );

    // s1's keeper is reported dead.
    c.source
        .update_cd(|cd| cd.keepers.get_mut(&"ks1".into()).unwrap().status.healthy = false);
    assert_closed(&mut on_s1).await;
    status_has(&p, "to 1 standby").await;
    assert_eq!(session(ro).await.1, "2");
    assert_eq!(session(ro).await.1, "2");

    // s2 falls behind past maxStandbyLag (1 MiB by default).
    c.db("s2", |db| db.status.x_log_pos = 0);
    c.db("m", |db| db.status.x_log_pos = 10_000_000);
    assert_closed(&mut on_s2).await;
    status_has(
        &p,
        "; read-only: refusing connections (no standby qualifies)",
    )
    .await;
    let mut refused = TcpStream::connect(ro).await.unwrap();
    assert_closed(&mut refused).await;

    // Caught up again: served again.
    c.db("s2", |db| db.status.x_log_pos = 10_000_000);
    status_has(&p, "to 1 standby").await;
    assert_eq!(session(ro).await.1, "2");
}

#[tokio::test]
async fn a_promoted_standby_loses_its_read_only_sessions_before_the_proxy_acknowledges() {
    // A proxyTimeout far above the slow publish below.
    let c = cluster_with(cluster_data(
        GoDuration::from_millis(100),
        GoDuration::from_secs(10),
    ))
    .await;
    let (p, ro) = proxy(&c, false).await;
    status_has(&p, "to 2 standbys").await;
    let mut on_s1 = loop {
        let (s, who) = session(ro).await;
        if who == "1" {
            break s;
        }
    };
    // The acknowledgement reaches the store long before the proxy hears back: anything the
    // proxy did only after publishing would still be pending when the sentinel sees it.
    c.source.set_publish_delay(Duration::from_secs(1));
    // Phase one of a failover to s1: elected, masterDbUid cleared, generation bumped.
    c.source.update_cd(|cd| {
        let s1 = cd.dbs.get_mut(&"s1".into()).unwrap();
        s1.spec.role = DbRole::Master;
        s1.spec.follow_config = None;
        let s2 = cd.dbs.get_mut(&"s2".into()).unwrap();
        s2.spec.follow_config = Some(FollowConfig::internal(&"s1".into()));
        cd.dbs.get_mut(&"m".into()).unwrap().status.healthy = false;
        cd.cluster.status.master = Some("s1".into());
        cd.proxy.spec.master_db_uid.clear();
        cd.proxy.generation.bump();
    });
    let generation = c.source.cluster().proxy.generation;
    wait_for("the generation acknowledged", || {
        c.source.info().unwrap().generation == generation
    })
    .await;
    // Acknowledged: the session to the promoted db must already be gone.
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(
        Duration::from_millis(100),
        tokio::io::AsyncReadExt::read(&mut on_s1, &mut buf),
    )
    .await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "read-only session on the promoted db open after the ack: {r:?}"
    );
    status_has(&p, "to 1 standby").await;
    assert_eq!(session(ro).await.1, "2");
}

#[tokio::test]
async fn the_master_serves_read_only_clients_only_as_a_fallback() {
    let c = cluster().await;
    let (p, ro) = proxy(&c, true).await;
    status_has(&p, "to 2 standbys").await;
    // Both standbys fail: clients fall back to the master.
    c.db("s1", |db| db.status.healthy = false);
    c.db("s2", |db| db.status.healthy = false);
    status_has(&p, "; read-only: to the master").await;
    let (mut on_master, who) = session(ro).await;
    assert_eq!(who, "M");
    // A standby is back: new clients go to it, the fallback sessions are cut.
    c.db("s2", |db| db.status.healthy = true);
    assert_closed(&mut on_master).await;
    status_has(&p, "to 1 standby").await;
    assert_eq!(session(ro).await.1, "2");
    // Without the master routed (a switch in progress), there is no fallback either.
    c.db("s2", |db| db.status.healthy = false);
    status_has(&p, "; read-only: to the master").await;
    let (mut on_master, _) = session(ro).await;
    c.source.update_cd(|cd| {
        cd.proxy.spec.master_db_uid.clear();
        cd.proxy.generation.bump();
    });
    assert_closed(&mut on_master).await;
    status_has(&p, "; read-only: refusing connections").await;
}

#[tokio::test]
async fn failing_closed_closes_read_only_sessions_too() {
    let c = cluster().await;
    let (p, ro) = proxy(&c, true).await;
    status_has(&p, "to 2 standbys").await;
    let (mut s, _) = session(ro).await;
    c.source.set_health(Health::Failing);
    assert_closed(&mut s).await;
    status_has(&p, "; read-only: refusing connections").await;
    let mut refused = TcpStream::connect(ro).await.unwrap();
    assert_closed(&mut refused).await;
    c.source.set_health(Health::Up);
    status_has(&p, "to 2 standbys").await;
    assert!(matches!(session(ro).await.1.as_str(), "1" | "2"));
}

#[tokio::test]
async fn an_owned_read_only_port_is_bound_after_the_first_check() {
    let c = cluster().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rw = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rw_addr = rw.local_addr().unwrap();
    let cfg = ProxyConfig {
        read_only_port: Some(port),
        ..config(0)
    };
    let handed = Handed {
        read_write: vec![rw],
        read_only: Vec::new(),
    };
    let p = start_notifying(&c.source, cfg, handed, rw_addr, Notifier::disabled());
    enable_proxy(&c.source).await;
    status_has(&p, "to 2 standbys").await;
    let ro: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(matches!(session(ro).await.1.as_str(), "1" | "2"));
}

#[tokio::test]
async fn a_read_only_port_in_use_at_start_is_a_clear_error_naming_its_flags() {
    let c = cluster().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let rw = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let rw_addr = rw.local_addr().unwrap();
    let cfg = ProxyConfig {
        read_only_port: Some(port),
        ..config(0)
    };
    let handed = Handed {
        read_write: vec![rw],
        read_only: Vec::new(),
    };
    let mut p = start_notifying(&c.source, cfg, handed, rw_addr, Notifier::disabled());
    let r = tokio::time::timeout(super::tests::DEADLINE, &mut p.task)
        .await
        .expect("proxy kept running without its read-only port")
        .unwrap();
    let e = r.expect_err("bind must fail").to_string();
    assert!(
        e.contains(&format!("127.0.0.1:{port}")) && e.contains("--read-only-port"),
        "{e}"
    );
}
