//! The etcd v3 store against a real etcd started per test.

use crate::support;

use support::fixtures::{keeper_info, new_cluster_data};

use etcd_client::{Client, GetOptions, LeaseTimeToLiveOptions};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use stolon::cluster::{Generation, KeeperUid, ProxyInfo, SentinelInfo, new_uid};
use stolon::store::{
    CasOutcome, Store, StoreBackend, StoreConfig, StoreCredentials, StoreError, StoreEvent,
};
use support::etcd::store_config;
use support::procs::RunAs;
use support::tls::Certs;
use support::{Etcd, free_port, wait_until_async};
use tokio::sync::mpsc;

// ---- test support -----------------------------------------------------------------------------

/// A plain client (no TLS) for reading raw keys.
async fn raw_client(etcd: &Etcd) -> Client {
    Client::connect([etcd.endpoint()], None).await.unwrap()
}

/// Waits until `store` can read from `etcd`.
async fn wait_ready(etcd: &Etcd, store: &Store) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.get_cluster_data_raw().await {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => panic!(
                "etcd at {} not ready: {e}\n{}",
                etcd.endpoint(),
                etcd.log_tail(20)
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn config(endpoint: &str, cluster: &str) -> StoreConfig {
    store_config(endpoint, cluster, Duration::from_secs(2))
}

async fn started(cluster: &str) -> (Etcd, Store) {
    let etcd = Etcd::start();
    let store = Store::connect(&config(&etcd.endpoint(), cluster))
        .await
        .unwrap();
    wait_ready(&etcd, &store).await;
    (etcd, store)
}

fn proxy(uid: &str) -> ProxyInfo {
    ProxyInfo {
        info_uid: new_uid(),
        uid: uid.into(),
        generation: Generation::new(1),
        proxy_timeout_ns: 15_000_000_000,
        read_only: false,
    }
}

async fn all_keys(client: &mut Client) -> BTreeSet<String> {
    let resp = client
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// Next event within 10 s; panics otherwise.
async fn next_event(rx: &mut mpsc::Receiver<StoreEvent>) -> StoreEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a store event within 10s")
        .expect("watch channel open")
}

// ---- clusterdata ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusterdata_compare_and_swap() {
    let (etcd, store) = started("cas").await;
    assert!(store.get_cluster_data().await.unwrap().is_none());

    let cd = new_cluster_data();
    let CasOutcome::Written { mod_revision: r1 } = store.cas_cluster_data(&cd, 0).await.unwrap()
    else {
        panic!("create-only write on a missing key must succeed")
    };
    assert_eq!(
        store.cas_cluster_data(&cd, 0).await.unwrap(),
        CasOutcome::Conflict,
        "create-only must fail once the key exists"
    );
    let got = store.get_cluster_data().await.unwrap().unwrap();
    assert_eq!(got.mod_revision, r1);
    assert_eq!(got.value, cd);

    let mut cd2 = cd.clone();
    cd2.cluster.generation.bump();
    let CasOutcome::Written { mod_revision: r2 } = store.cas_cluster_data(&cd2, r1).await.unwrap()
    else {
        panic!("write at the current revision must succeed")
    };
    assert!(r2 > r1);
    assert_eq!(
        store.cas_cluster_data(&cd, r1).await.unwrap(),
        CasOutcome::Conflict,
        "a stale revision must conflict"
    );
    let got = store.get_cluster_data().await.unwrap().unwrap();
    assert_eq!((got.mod_revision, got.value), (r2, cd2));

    // A value that is not valid clusterdata is reported with its key, not silently used.
    let mut raw = raw_client(&etcd).await;
    raw.put(
        "stolon/cluster/cas/clusterdata",
        r#"{"formatVersion":2}"#,
        None,
    )
    .await
    .unwrap();
    match store.get_cluster_data().await {
        Err(StoreError::BadValue { key, reason }) => {
            assert_eq!(key, "stolon/cluster/cas/clusterdata");
            assert!(reason.contains("formatVersion"), "{reason}");
        }
        other => panic!("expected BadValue, got {other:?}"),
    }
    assert!(store.get_cluster_data_raw().await.unwrap().is_some());
}

// ---- infos, lease, key layout -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infos_share_one_lease_and_use_upstream_keys() {
    let (etcd, store) = started("smoke").await;
    store.set_lease_ttl(Duration::from_secs(5)); // floored to 20 s
    for _ in 0..5 {
        store.put_keeper_info(&keeper_info("k1")).await.unwrap();
        store.put_keeper_info(&keeper_info("k2")).await.unwrap();
        store
            .put_sentinel_info(&SentinelInfo {
                uid: "58419a5e".into(),
            })
            .await
            .unwrap();
        store.put_proxy_info(&proxy("5b6bbdba")).await.unwrap();
    }
    store.put_cluster_data(&new_cluster_data()).await.unwrap();

    let mut raw = raw_client(&etcd).await;
    let expected: BTreeSet<String> = [
        "stolon/cluster/smoke/clusterdata",
        "stolon/cluster/smoke/keepers/info/k1",
        "stolon/cluster/smoke/keepers/info/k2",
        "stolon/cluster/smoke/sentinels/info/58419a5e",
        "stolon/cluster/smoke/proxies/info/5b6bbdba",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(all_keys(&mut raw).await, expected);

    // One lease for the whole process, however many puts; every info key is on it.
    let leases = raw.leases().await.unwrap();
    assert_eq!(leases.leases().len(), 1, "exactly one lease per process");
    let lease = leases.leases()[0].id();
    assert_eq!(store.lease_id(), Some(lease));
    let resp = raw
        .get(
            "stolon/cluster/smoke/",
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    for kv in resp.kvs() {
        let key = String::from_utf8_lossy(kv.key());
        let expected_lease = if key.ends_with("/clusterdata") {
            0
        } else {
            lease
        };
        assert_eq!(kv.lease(), expected_lease, "lease of {key}");
    }
    let ttl = raw
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 20, "TTL floored at upstream's MinTTL");
    assert_eq!(ttl.keys().len(), 4);

    // Listing: an unparsable value is skipped, the rest still listed.
    raw.put("stolon/cluster/smoke/keepers/info/bad", "not json", None)
        .await
        .unwrap();
    let keepers = store.get_keepers_info().await.unwrap();
    assert_eq!(
        keepers.keys().cloned().collect::<Vec<_>>(),
        vec!["k1", "k2"]
    );
    assert_eq!(keepers[&KeeperUid::from("k1")].cluster_uid, "c1");
    assert_eq!(store.get_sentinels_info().await.unwrap().len(), 1);
    let proxies = store.get_proxies_info().await.unwrap();
    assert_eq!(proxies["5b6bbdba"].generation, Generation::new(1));

    // Keep-alive renews the lease (at ttl/3): the remaining TTL goes back up.
    let mut lowest = i64::MAX;
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let now = raw.lease_time_to_live(lease, None).await.unwrap().ttl();
        if now > lowest {
            break;
        }
        lowest = now;
        assert!(Instant::now() < deadline, "lease not renewed (ttl {now})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(store.lease_lost_since().is_none());

    // The lease revoked behind our back (as after an outage longer than the TTL): the next
    // publish grants a new one and re-puts, still one lease in total.
    raw.lease_revoke(lease).await.unwrap();
    assert!(
        !all_keys(&mut raw)
            .await
            .contains("stolon/cluster/smoke/keepers/info/k1")
    );
    store.put_keeper_info(&keeper_info("k1")).await.unwrap();
    let leases = raw.leases().await.unwrap();
    assert_eq!(leases.leases().len(), 1);
    assert_ne!(leases.leases()[0].id(), lease);
    assert!(
        all_keys(&mut raw)
            .await
            .contains("stolon/cluster/smoke/keepers/info/k1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_lease_ttl_moves_the_keys_to_a_new_lease() {
    let (etcd, store) = started("ttl").await;
    // Before any lease: only the TTL of the first one.
    store
        .change_lease_ttl(Duration::from_secs(30))
        .await
        .unwrap();
    store.put_keeper_info(&keeper_info("k1")).await.unwrap();
    store.put_proxy_info(&proxy("p1")).await.unwrap();
    let mut raw = raw_client(&etcd).await;
    let first = store.lease_id().unwrap();
    let granted = |raw: &mut Client, id| {
        let mut raw = raw.clone();
        async move {
            raw.lease_time_to_live(id, None)
                .await
                .unwrap()
                .granted_ttl()
        }
    };
    assert_eq!(granted(&mut raw, first).await, 30);
    let values = |raw: &mut Client| {
        let mut raw = raw.clone();
        async move {
            let resp = raw
                .get("stolon/cluster/ttl/", Some(GetOptions::new().with_prefix()))
                .await
                .unwrap();
            resp.kvs()
                .iter()
                .map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.lease()))
                .collect::<Vec<_>>()
        }
    };
    let before = values(&mut raw).await;
    assert_eq!(before.len(), 2);

    // The same TTL again: nothing changes.
    store
        .change_lease_ttl(Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(store.lease_id(), Some(first));

    store
        .change_lease_ttl(Duration::from_secs(45))
        .await
        .unwrap();
    let second = store.lease_id().unwrap();
    assert_ne!(second, first);
    assert_eq!(granted(&mut raw, second).await, 45);
    let leases = raw.leases().await.unwrap();
    assert_eq!(leases.leases().len(), 1, "the old lease is revoked");
    let after = values(&mut raw).await;
    let expected: Vec<_> = before.into_iter().map(|(k, v, _)| (k, v, second)).collect();
    assert_eq!(after, expected, "same keys and values, on the new lease");

    // Floored at MIN_TTL; keep-alive runs on the new lease (put on it works).
    store
        .change_lease_ttl(Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(granted(&mut raw, store.lease_id().unwrap()).await, 20);
    store.put_keeper_info(&keeper_info("k2")).await.unwrap();
    assert_eq!(raw.leases().await.unwrap().leases().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_is_kept_exactly() {
    let etcd = Etcd::start();
    let mut cfg = config(&etcd.endpoint(), "c");
    cfg.prefix = "/my/prefix".into();
    let store = Store::connect(&cfg).await.unwrap();
    wait_ready(&etcd, &store).await;
    assert_eq!(store.cluster_path(), "/my/prefix/c");
    store.put_cluster_data(&new_cluster_data()).await.unwrap();
    store.put_keeper_info(&keeper_info("k1")).await.unwrap();
    let mut raw = raw_client(&etcd).await;
    let keys: Vec<String> = all_keys(&mut raw).await.into_iter().collect();
    assert_eq!(
        keys,
        vec!["/my/prefix/c/clusterdata", "/my/prefix/c/keepers/info/k1"]
    );
}

// ---- watch ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_clusterdata_and_infos() {
    let (etcd, store) = started("w").await;
    let mut rx = store.watch().await.unwrap();

    store
        .cas_cluster_data(&new_cluster_data(), 0)
        .await
        .unwrap();
    assert_eq!(next_event(&mut rx).await, StoreEvent::ClusterData);

    store.put_keeper_info(&keeper_info("k1")).await.unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::KeeperInfo {
            uid: "k1".into(),
            deleted: false
        }
    );
    store.put_proxy_info(&proxy("p1")).await.unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::ProxyInfo {
            uid: "p1".into(),
            deleted: false
        }
    );

    // A keeper vanishing (here deleted; in life its lease expiring) is an event too.
    let mut raw = raw_client(&etcd).await;
    raw.delete("stolon/cluster/w/keepers/info/k1", None)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::KeeperInfo {
            uid: "k1".into(),
            deleted: true
        }
    );

    // Other clusters sharing the prefix are not ours.
    raw.put("stolon/cluster/w2/clusterdata", "{}", None)
        .await
        .unwrap();
    raw.put(
        "stolon/cluster/w/sentinels/info/s1",
        r#"{"UID":"s1"}"#,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::SentinelInfo {
            uid: "s1".into(),
            deleted: false
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_lease_survive_an_etcd_restart() {
    let (mut etcd, store) = started("r").await;
    store.put_keeper_info(&keeper_info("k1")).await.unwrap();
    let mut rx = store.watch().await.unwrap();
    store.put_keeper_info(&keeper_info("k1")).await.unwrap();
    assert!(matches!(
        next_event(&mut rx).await,
        StoreEvent::KeeperInfo { .. }
    ));

    etcd.stop();
    // Keep-alive notices (within ttl/3 + timeout) and reports since when.
    let s = store.clone();
    wait_until_async(Duration::from_secs(15), "lease_lost_since", move || {
        std::future::ready(s.lease_lost_since().is_some())
    })
    .await;
    assert!(store.get_cluster_data_raw().await.is_err());

    etcd.start_again();
    wait_ready(&etcd, &store).await;
    // After re-establishing, the watch tells the consumer to re-read everything.
    let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("ClusterData after the watch is re-established")
        .unwrap();
    assert_eq!(ev, StoreEvent::ClusterData);
    store.put_keeper_info(&keeper_info("k2")).await.unwrap();
    assert_eq!(
        next_event(&mut rx).await,
        StoreEvent::KeeperInfo {
            uid: "k2".into(),
            deleted: false
        }
    );
    let s = store.clone();
    wait_until_async(Duration::from_secs(15), "lease healthy again", move || {
        std::future::ready(s.lease_lost_since().is_none())
    })
    .await;
}

// ---- election ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_election() {
    let etcd = Etcd::start();
    let cfg = config(&etcd.endpoint(), "e");
    let a = Store::connect(&cfg).await.unwrap();
    let b = Store::connect(&cfg).await.unwrap();
    wait_ready(&etcd, &a).await;
    assert_eq!(a.leader().await.unwrap(), None);

    let ea = a.election("sA");
    let eb = b.election("sB");
    tokio::time::timeout(Duration::from_secs(10), ea.campaign())
        .await
        .unwrap()
        .unwrap();
    assert!(ea.is_leader());
    assert_eq!(b.leader().await.unwrap().as_deref(), Some("sA"));

    // The leader key is upstream's: P/sentinel-leader/<lease-hex> = sentinel uid.
    let mut raw = raw_client(&etcd).await;
    let resp = raw
        .get(
            "stolon/cluster/e/sentinel-leader/",
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let kv = &resp.kvs()[0];
    assert_eq!(
        String::from_utf8_lossy(kv.key()),
        format!(
            "stolon/cluster/e/sentinel-leader/{:x}",
            a.lease_id().unwrap()
        )
    );
    assert_eq!(kv.value(), b"sA");

    let eb2 = eb.clone();
    let mut b_campaign = tokio::spawn(async move { eb2.campaign().await });
    assert!(
        tokio::time::timeout(Duration::from_millis(800), &mut b_campaign)
            .await
            .is_err(),
        "a second candidate must wait while the first leads"
    );
    assert!(!eb.is_leader());

    let cd = new_cluster_data();
    let CasOutcome::Written { mod_revision: rev } =
        a.cas_cluster_data_as_leader(&cd, 0, &ea).await.unwrap()
    else {
        panic!("leader write must succeed")
    };
    assert_eq!(
        b.cas_cluster_data_as_leader(&cd, rev, &eb).await.unwrap(),
        CasOutcome::Conflict,
        "a non-leader cannot write"
    );

    ea.resign().await.unwrap();
    assert!(!ea.is_leader());
    tokio::time::timeout(Duration::from_secs(10), b_campaign)
        .await
        .expect("the other candidate wins after resign")
        .unwrap()
        .unwrap();
    assert!(eb.is_leader());
    assert_eq!(a.leader().await.unwrap().as_deref(), Some("sB"));
    assert_eq!(
        a.cas_cluster_data_as_leader(&cd, rev, &ea).await.unwrap(),
        CasOutcome::Conflict,
        "a resigned sentinel cannot write"
    );
    let CasOutcome::Written { mod_revision: rev } =
        b.cas_cluster_data_as_leader(&cd, rev, &eb).await.unwrap()
    else {
        panic!("new leader write must succeed")
    };

    // B's lease disappears behind its back (as in a long partition). Until keep-alive notices,
    // B still believes it leads: the txn's leader-key compare is what stops its write.
    raw.lease_revoke(b.lease_id().unwrap()).await.unwrap();
    assert_eq!(
        b.cas_cluster_data_as_leader(&cd, rev, &eb).await.unwrap(),
        CasOutcome::Conflict,
        "a deposed sentinel cannot write"
    );
    assert!(!eb.is_leader());
    assert_eq!(
        a.get_cluster_data().await.unwrap().unwrap().mod_revision,
        rev
    );

    // A campaigns again and wins; B (with a new lease) campaigning now waits.
    tokio::time::timeout(Duration::from_secs(10), ea.campaign())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.leader().await.unwrap().as_deref(), Some("sA"));
    let eb2 = eb.clone();
    let mut b_campaign = tokio::spawn(async move { eb2.campaign().await });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut b_campaign)
            .await
            .is_err()
    );
    // A's lease goes: B takes over and A's observer/lease check turns A's is_leader false.
    raw.lease_revoke(a.lease_id().unwrap()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), b_campaign)
        .await
        .expect("B wins once A's key is gone")
        .unwrap()
        .unwrap();
    let ea2 = ea.clone();
    wait_until_async(Duration::from_secs(10), "A to notice it lost", move || {
        std::future::ready(!ea2.is_leader())
    })
    .await;
    assert!(eb.is_leader());
}

// ---- failures ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_within_the_timeout_when_etcd_is_down() {
    // Connecting works with etcd down: the roles keep retrying.
    let mut cfg = config(&format!("127.0.0.1:{}", free_port()), "d");
    cfg.timeout = Duration::from_secs(1);
    let store = Store::connect(&cfg).await.unwrap();
    let t = Instant::now();
    let e = store.get_cluster_data().await.unwrap_err();
    eprintln!("etcd never started: {e}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    let mut etcd = Etcd::start();
    let mut cfg = config(&etcd.endpoint(), "d");
    cfg.timeout = Duration::from_secs(1);
    let store = Store::connect(&cfg).await.unwrap();
    wait_ready(&etcd, &store).await;
    store.put_keeper_info(&keeper_info("k1")).await.unwrap();
    etcd.stop();

    let t = Instant::now();
    let e = store.get_cluster_data().await.unwrap_err();
    eprintln!("etcd stopped: {e}");
    assert!(
        store
            .cas_cluster_data(&new_cluster_data(), 0)
            .await
            .is_err()
    );
    assert!(store.put_keeper_info(&keeper_info("k1")).await.is_err());
    assert!(store.get_keepers_info().await.is_err());
    assert!(store.leader().await.is_err());
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "five requests took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn bad_configs_are_refused() {
    let mut cfg = config("https://127.0.0.1:1,http://127.0.0.1:2", "x");
    let e = Store::connect(&cfg).await.err().unwrap().to_string();
    assert!(e.contains("mix http and https"), "{e}");
    cfg.endpoints = vec!["https://127.0.0.1:1".into()];
    cfg.ca_file = Some("/nonexistent/ca.crt".into());
    let e = Store::connect(&cfg).await.err().unwrap().to_string();
    assert!(e.contains("/nonexistent/ca.crt"), "{e}");
    let e = StoreBackend::parse("consul").unwrap_err().to_string();
    assert!(e.contains("not supported"), "{e}");
}

// ---- TLS --------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(&dir.path().join("tls"), RunAs::Me);
    let etcd = Etcd::start_in(dir.path(), Some(certs.clone()));
    assert!(etcd.endpoint().starts_with("https://"));

    let mut cfg = config(&etcd.endpoint(), "tls");
    cfg.ca_file = Some(certs.ca_cert);
    cfg.cert_file = Some(certs.client_cert);
    cfg.key_file = Some(certs.client_key);
    let store = Store::connect(&cfg).await.unwrap();
    wait_ready(&etcd, &store).await;
    let cd = new_cluster_data();
    assert!(matches!(
        store.cas_cluster_data(&cd, 0).await.unwrap(),
        CasOutcome::Written { .. }
    ));
    assert_eq!(store.get_cluster_data().await.unwrap().unwrap().value, cd);
    store.put_keeper_info(&keeper_info("k1")).await.unwrap();
    assert_eq!(store.get_keepers_info().await.unwrap().len(), 1);
    let mut rx = store.watch().await.unwrap();
    store.put_keeper_info(&keeper_info("k2")).await.unwrap();
    assert!(matches!(
        next_event(&mut rx).await,
        StoreEvent::KeeperInfo { .. }
    ));

    // Without our CA the server certificate is not trusted: a clear error, no hang.
    let mut no_ca = cfg.clone();
    no_ca.ca_file = None;
    let e = match Store::connect(&no_ca).await {
        Ok(s) => s.get_cluster_data_raw().await.unwrap_err(),
        Err(e) => e,
    };
    let text = e.to_string();
    eprintln!("without the CA: {text}");
    assert!(
        text.contains("certificate") || text.contains("UnknownIssuer"),
        "unclear error without the CA: {text}"
    );

    // Without a client certificate etcd (--client-cert-auth) refuses us.
    let mut no_cert = cfg.clone();
    no_cert.cert_file = None;
    no_cert.key_file = None;
    let s = Store::connect(&no_cert).await.unwrap();
    let e = s.get_cluster_data_raw().await.unwrap_err();
    eprintln!("without a client certificate: {e}");
}

/// etcd with authentication on: the store works as the configured user, a wrong password is
/// refused with etcd's reason, and after an etcd restart (which forgets every token) the client
/// authenticates again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticates_as_the_store_user_also_after_an_etcd_restart() {
    let mut etcd = Etcd::start();
    etcd.etcdctl_ok(&[
        "user",
        "add",
        "root",
        "--new-user-password",
        "root pw",
        "--interactive=false",
    ]);
    etcd.etcdctl_ok(&["auth", "enable"]);
    etcd.etcdctl_user = Some("root:root pw".into());
    let with = |user: &str, password: &str| StoreConfig {
        credentials: Some(StoreCredentials {
            user: user.into(),
            password: password.into(),
        }),
        ..config(&etcd.endpoint(), "auth")
    };

    let store = Store::connect(&with("root", "root pw")).await.unwrap();
    store.put_proxy_info(&proxy("p1")).await.unwrap();
    assert_eq!(store.get_proxies_info().await.unwrap().len(), 1);

    let refused = match Store::connect(&with("root", "wrong")).await {
        Err(e) => e.to_string(),
        Ok(s) => s.get_proxies_info().await.unwrap_err().to_string(),
    };
    assert!(refused.contains("authentication failed"), "{refused}");
    let anonymous = Store::connect(&config(&etcd.endpoint(), "auth")).await;
    let denied = match anonymous {
        Err(e) => e.to_string(),
        Ok(s) => s.get_proxies_info().await.unwrap_err().to_string(),
    };
    assert!(
        denied.contains("user name is empty") || denied.contains("permission denied"),
        "{denied}"
    );

    etcd.stop();
    etcd.start_again();
    wait_until_async(
        Duration::from_secs(20),
        "the store to answer again after etcd restarted",
        || async { store.get_proxies_info().await.is_ok_and(|i| i.len() == 1) },
    )
    .await;
}
