//! The sentinel loop against a real etcd: two sentinels, keepers simulated by tasks that
//! publish infos like the real keeper (a new infoUID each publish, the db generation they were
//! asked for). Checks initialisation from --initial-cluster-spec, failover time, leadership
//! handover, and that a full store (etcd's NOSPACE alarm) fails nobody over once cleared.

use crate::cluster::*;
use crate::role::RoleContext;
use crate::sentinel::{SentinelConfig, SentinelError, run};
use crate::store::{Store, StoreBackend, StoreConfig};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A single-member etcd on free 127.0.0.1 ports with its own data dir; killed on drop.
struct Etcd {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Etcd {
    fn start() -> Etcd {
        Etcd::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .arg("--name=t")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd on PATH");
        Etcd { child, dir, url }
    }

    fn config(&self, cluster: &str) -> StoreConfig {
        StoreConfig {
            backend: StoreBackend::Etcdv3,
            endpoints: vec![self.url.clone()],
            timeout: Duration::from_secs(2),
            prefix: "stolon/cluster".into(),
            cluster_name: cluster.into(),
            cert_file: None,
            key_file: None,
            ca_file: None,
            skip_tls_verify: false,
            credentials: None,
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for<T>(within: Duration, what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A keeper process as the sentinel sees it: publishes an info every `every`, reporting the
/// db assigned to it as converged and healthy.
fn spawn_keeper(
    store: Store,
    uid: KeeperUid,
    every: Duration,
    kill: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    spawn_pausable_keeper(store, uid, every, kill, Arc::new(AtomicBool::new(false)))
}

/// A keeper that publishes nothing while `paused` (but keeps its lease alive).
fn spawn_pausable_keeper(
    store: Store,
    uid: KeeperUid,
    every: Duration,
    kill: CancellationToken,
    paused: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            if paused.load(Ordering::SeqCst) {
            } else if let Ok(Some(cd)) = store.get_cluster_data().await {
                n += 1;
                let cd = cd.value;
                let postgres_state = cd.db_of_keeper(&uid).map(|db| PostgresState {
                    uid: db.uid.clone(),
                    generation: db.generation,
                    listen_address: "127.0.0.1".into(),
                    port: "5432".into(),
                    healthy: true,
                    system_id: "7000000000000000001".into(),
                    timeline_id: 1,
                    x_log_pos: 1000,
                    synchronous_standbys: db.spec.synchronous_standbys.clone(),
                    ..Default::default()
                });
                let info = KeeperInfo {
                    info_uid: format!("{uid}-{n}"),
                    uid: uid.clone(),
                    cluster_uid: cd.cluster.uid.clone(),
                    boot_uuid: format!("boot-{uid}"),
                    postgres_state,
                    ..Default::default()
                };
                let _ = store.put_keeper_info(&info).await;
            }
            tokio::select! {
                _ = kill.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    })
}

struct RunningSentinel {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), SentinelError>>,
}

fn spawn_sentinel(etcd: &Etcd, cluster: &str, spec_file: PathBuf) -> RunningSentinel {
    let stop = CancellationToken::new();
    let cfg = SentinelConfig {
        initial_cluster_spec: Some(spec_file),
    };
    let task = tokio::spawn(run(
        cfg,
        RoleContext::new(etcd.config(cluster), stop.clone()),
    ));
    RunningSentinel { stop, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_initialise_fail_over_fast_and_hand_over_leadership() {
    let etcd = Etcd::start();
    let cluster = "sentinel-loop";
    let spec_file = etcd.dir.path().join("spec.json");
    std::fs::write(
        &spec_file,
        r#"{"initMode":"new","sleepInterval":"1s","failInterval":"3s"}"#,
    )
    .unwrap();
    let reader = Store::connect(&etcd.config(cluster)).await.unwrap();
    wait_for(Duration::from_secs(30), "etcd", async || {
        reader.get_cluster_data_raw().await.ok()
    })
    .await;

    // The first sentinel is alone, so it leads; the second joins once the cluster runs.
    let first = spawn_sentinel(&etcd, cluster, spec_file.clone());
    let every = Duration::from_secs(1);
    let mut keepers = Vec::new();
    for uid in ["k0", "k1", "k2"] {
        let kill = CancellationToken::new();
        let store = Store::connect(&etcd.config(cluster)).await.unwrap();
        keepers.push((
            uid,
            kill.clone(),
            spawn_keeper(store, uid.into(), every, kill),
        ));
    }

    let cd = wait_for(
        Duration::from_secs(30),
        "an initialized cluster",
        async || {
            let cd = reader.get_cluster_data().await.ok()??.value;
            let ready = cd.cluster.status.phase == ClusterPhase::Normal
                && cd.dbs.len() == 3
                && cd.proxy.spec.master_db_uid
                    == cd.cluster.status.master.clone().unwrap_or_default()
                && cd
                    .dbs
                    .values()
                    .all(|d| d.status.healthy && d.status.current_generation == d.generation);
            ready.then_some(cd)
        },
    )
    .await;
    let old_master_keeper = cd.master_keeper_uid().unwrap().clone();
    let second = spawn_sentinel(&etcd, cluster, spec_file.clone());

    // SIGKILL-like: the keeper stops publishing; its info key stays until its lease expires.
    let (_, kill, task) = keepers
        .iter()
        .find(|(uid, _, _)| *uid == old_master_keeper)
        .unwrap();
    kill.cancel();
    while !task.is_finished() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = Instant::now();
    let cd = wait_for(Duration::from_secs(15), "a failover", async || {
        let cd = reader.get_cluster_data().await.ok()??.value;
        (cd.master_keeper_uid() != Some(&old_master_keeper)).then_some(cd)
    })
    .await;
    let took = killed.elapsed();
    eprintln!("failover {took:?} after the last keeper publish");
    // failInterval 3s after the last publish, plus the time to notice: the check is scheduled
    // for that moment, not rounded up to sleepInterval.
    assert!(took < Duration::from_millis(4500), "failover took {took:?}");
    assert!(
        took > Duration::from_millis(1900),
        "failover before failInterval: {took:?}"
    );
    let new_master = cd.cluster.status.master.clone().unwrap_or_default();

    // The leader sentinel goes away: the second one must take over and keep acting.
    let leader = reader.leader().await.unwrap();
    first.stop.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), first.task)
        .await
        .expect("sentinel stops promptly")
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
    wait_for(Duration::from_secs(30), "a new leader", async || {
        let now = reader.leader().await.ok()?;
        (now.is_some() && now != leader).then_some(())
    })
    .await;
    // The old master's keeper comes back and must be given a new standby db by the new leader.
    let revived = CancellationToken::new();
    let store = Store::connect(&etcd.config(cluster)).await.unwrap();
    let _revived_task = spawn_keeper(store, old_master_keeper.clone(), every, revived.clone());
    wait_for(
        Duration::from_secs(30),
        "the old master to rejoin",
        async || {
            let cd = reader.get_cluster_data().await.ok()??.value;
            let db = cd.db_of_keeper(&old_master_keeper)?;
            let follows = db.spec.follow_config.as_ref().map(|f| f.db_uid.clone());
            (follows == Some(new_master.clone()) && db.status.current_generation == db.generation)
                .then_some(())
        },
    )
    .await;

    second.stop.cancel();
    for (_, kill, _) in &keepers {
        kill.cancel();
    }
    revived.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), second.task)
        .await
        .expect("sentinel stops promptly")
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test]
async fn invalid_initial_spec_is_fatal_before_touching_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("spec.json");
    std::fs::write(&file, r#"{"initMode":"new","failInterval":"-1s"}"#).unwrap();
    let cfg = SentinelConfig {
        initial_cluster_spec: Some(file.clone()),
    };
    // An unreachable endpoint: the error must come before any store access.
    let store_cfg = StoreConfig {
        backend: StoreBackend::Etcdv3,
        endpoints: vec![format!("http://127.0.0.1:{}", free_port())],
        timeout: Duration::from_secs(1),
        prefix: "stolon/cluster".into(),
        cluster_name: "x".into(),
        cert_file: None,
        key_file: None,
        ca_file: None,
        skip_tls_verify: false,
        credentials: None,
    };
    let err = run(cfg, RoleContext::new(store_cfg, CancellationToken::new()))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("--initial-cluster-spec"), "{msg}");
    assert!(msg.contains("failInterval must be positive"), "{msg}");
    assert!(msg.contains(&file.display().to_string()), "{msg}");
}

/// A proxy as the sentinel sees it: publishes an info every `every` acknowledging the proxy
/// generation it read, unless `paused`.
fn spawn_proxy(
    store: Store,
    uid: String,
    every: Duration,
    kill: CancellationToken,
    paused: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            if !paused.load(Ordering::SeqCst)
                && let Ok(Some(cd)) = store.get_cluster_data().await
            {
                n += 1;
                let info = ProxyInfo {
                    info_uid: format!("{uid}-{n}"),
                    uid: uid.clone(),
                    generation: cd.value.proxy.generation,
                    proxy_timeout_ns: 1_500_000_000,
                    read_only: false,
                };
                let _ = store.put_proxy_info(&info).await;
            }
            tokio::select! {
                _ = kill.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    })
}

/// etcd full (NOSPACE) for longer than failInterval and the proxies' window, then cleared as
/// an operator would; keepers and the proxy publish again only a while after the sentinel's
/// first write got through. The master stays, the proxy stays enabled; a master killed
/// afterwards is still failed over (health is judged again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_store_cleared_after_fail_interval_fails_nobody_over() {
    // A tiny backend quota: a dozen 100 kB values raise etcd's NOSPACE alarm.
    let etcd = Etcd::start_with(&["--quota-backend-bytes=1048576"]);
    let cluster = "sentinel-nospace";
    let spec_file = etcd.dir.path().join("spec.json");
    std::fs::write(
        &spec_file,
        r#"{"initMode":"new","sleepInterval":"1s","failInterval":"3s"}"#,
    )
    .unwrap();
    let reader = Store::connect(&etcd.config(cluster)).await.unwrap();
    wait_for(Duration::from_secs(30), "etcd", async || {
        reader.get_cluster_data_raw().await.ok()
    })
    .await;
    let sentinel = spawn_sentinel(&etcd, cluster, spec_file);
    let every = Duration::from_millis(500);
    let paused = Arc::new(AtomicBool::new(false));
    let mut keepers = Vec::new();
    for uid in ["k0", "k1", "k2"] {
        let kill = CancellationToken::new();
        let store = Store::connect(&etcd.config(cluster)).await.unwrap();
        let task = spawn_pausable_keeper(store, uid.into(), every, kill.clone(), paused.clone());
        keepers.push((uid, kill, task));
    }
    let proxy_kill = CancellationToken::new();
    let store = Store::connect(&etcd.config(cluster)).await.unwrap();
    let _proxy = spawn_proxy(
        store,
        "p1".into(),
        every,
        proxy_kill.clone(),
        paused.clone(),
    );
    let before = wait_for(
        Duration::from_secs(30),
        "an initialized cluster routed by p1",
        async || {
            let cd = reader.get_cluster_data().await.ok()??.value;
            let ready = cd.cluster.status.phase == ClusterPhase::Normal
                && cd.dbs.len() == 3
                && cd.proxy.spec.enabled_proxies == ["p1"]
                && cd.proxy.spec.master_db_uid
                    == cd.cluster.status.master.clone().unwrap_or_default()
                && cd
                    .dbs
                    .values()
                    .all(|d| d.status.healthy && d.status.current_generation == d.generation);
            ready.then_some(cd)
        },
    )
    .await;
    let master = before.cluster.status.master.clone().unwrap_or_default();

    let mut raw = etcd_client::Client::connect([etcd.url.clone()], None)
        .await
        .unwrap();
    let filler = vec![b'x'; 100_000];
    for i in 0.. {
        assert!(i < 100, "no NOSPACE alarm after {i} values");
        if let Err(e) = raw.put(format!("filler/{i}"), filler.clone(), None).await {
            assert!(e.to_string().contains("database space exceeded"), "{e}");
            break;
        }
    }
    // Full for twice failInterval (and the proxy's 3 s window): nothing can be written.
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Keepers and the proxy come back only 1.5 s after the store is writable again (before
    // the fix, the sentinel's first check after the clear failed the master over).
    paused.store(true, Ordering::SeqCst);
    let resp = raw
        .delete(
            "filler/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let rev = resp.header().unwrap().revision();
    raw.compact(
        rev,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    raw.defragment().await.unwrap();
    let alarms = raw
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    for a in alarms.alarms() {
        let mut opts = etcd_client::AlarmOptions::new();
        opts.with_member(a.member_id());
        raw.alarm(etcd_client::AlarmAction::Deactivate, a.alarm(), Some(opts))
            .await
            .unwrap();
    }
    let cleared = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    paused.store(false, Ordering::SeqCst);
    // failInterval and more after the clear: same master, p1 still enabled, all healthy.
    while cleared.elapsed() < Duration::from_secs(6) {
        let cd = reader.get_cluster_data().await.unwrap().unwrap().value;
        assert_eq!(
            cd.cluster.status.master.clone().unwrap_or_default(),
            master,
            "failed over"
        );
        assert_eq!(cd.proxy.spec.enabled_proxies, ["p1"]);
        assert_eq!(cd.proxy.spec.master_db_uid, master);
        assert!(
            cd.keepers.values().all(|k| k.status.healthy),
            "{}",
            cd.to_json_pretty()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Health is judged again: a killed master is failed over.
    let master_keeper = before.master_keeper_uid().unwrap().to_string();
    let (_, kill, _) = keepers
        .iter()
        .find(|(uid, _, _)| *uid == master_keeper)
        .unwrap();
    kill.cancel();
    wait_for(Duration::from_secs(15), "a failover", async || {
        let cd = reader.get_cluster_data().await.ok()??.value;
        (cd.cluster.status.master.clone().unwrap_or_default() != master).then_some(())
    })
    .await;

    sentinel.stop.cancel();
    for (_, kill, _) in &keepers {
        kill.cancel();
    }
    proxy_kill.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), sentinel.task)
        .await
        .expect("sentinel stops promptly")
        .unwrap();
    assert!(r.is_ok(), "{r:?}");
}
