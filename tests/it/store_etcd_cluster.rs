//! The store client on a real 3-member etcd cluster: a member cut off from its peers answers at
//! once that it has no leader (the client requires one, as etcd's Go client's
//! WithRequireLeader), and a frozen member (its socket open, no answers) is passed over after
//! one unanswered request instead of taking a share of all requests down with it.

use crate::support;

use nix::sys::signal::Signal;
use std::time::{Duration, Instant};
use stolon::cluster::{Generation, ProxyInfo, new_uid};
use stolon::store::{Store, StoreError, StoreEvent};
use support::etcd::{EtcdCluster, store_config};

/// Reads until one succeeds; panics after `within`.
async fn wait_readable(store: &Store, within: Duration, cluster: &EtcdCluster) {
    let deadline = Instant::now() + within;
    loop {
        match store.get_cluster_data_raw().await {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => {
                panic!("store not readable: {e}\n{}", cluster.log_tails(20))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn proxy_info() -> ProxyInfo {
    ProxyInfo {
        info_uid: new_uid(),
        uid: "p1".into(),
        generation: Generation::new(1),
        proxy_timeout_ns: 15_000_000_000,
        read_only: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_leader_fails_requests_at_once() {
    let mut cluster = EtcdCluster::start(3);
    let live = cluster.leader();
    let others: Vec<usize> = (0..3).filter(|&i| i != live).collect();
    // A long request timeout: a request that waited for it would be obvious.
    let timeout = Duration::from_secs(20);
    let store = Store::connect(&store_config(
        &cluster.members[live].endpoint(),
        "nl",
        timeout,
    ))
    .await
    .unwrap();
    wait_readable(&store, Duration::from_secs(30), &cluster).await;
    store.put_proxy_info(&proxy_info()).await.unwrap();

    // One peer frozen, one killed: the remaining member is alive but has no quorum, and after
    // its election timeout no leader.
    cluster.members[others[0]].signal(Signal::SIGSTOP);
    cluster.members[others[1]].stop();

    // Until the member notices, a request may still wait (for etcd's own request timeout); once
    // it has, requests fail with "no leader". Without the leader requirement they never would:
    // they would wait for the request timeout every time.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first: StoreError = loop {
        match store.get_cluster_data().await {
            Err(e) if e.is_no_leader() => break e,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no \"no leader\" answer; last: {other:?}\n{}",
                    cluster.log_tails(20)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let text = first.to_string();
    eprintln!("member without leader: {text}");
    assert!(
        text.contains("no leader") && text.contains("cut off from its peers"),
        "{text}"
    );
    assert!(
        std::error::Error::source(&first).is_some(),
        "the etcd error is kept as the source"
    );

    // Every kind of request now fails at once, well before the request timeout.
    let t = Instant::now();
    for _ in 0..3 {
        let e = store.get_cluster_data().await.unwrap_err();
        assert!(e.is_no_leader(), "{e}");
        let e = store.put_proxy_info(&proxy_info()).await.unwrap_err();
        assert!(e.is_no_leader(), "{e}");
        let e = store.get_proxies_info().await.unwrap_err();
        assert!(e.is_no_leader(), "{e}");
    }
    let took = t.elapsed();
    eprintln!("9 requests to a member without leader: {took:?}");
    assert!(
        took < timeout,
        "9 requests took {took:?}: at least one waited for the {timeout:?} timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_is_passed_over_after_one_unanswered_request() {
    let cluster = EtcdCluster::start(3);
    let timeout = Duration::from_secs(2);
    let store = Store::connect(&store_config(&cluster.endpoints(), "fz", timeout))
        .await
        .unwrap();
    wait_readable(&store, Duration::from_secs(30), &cluster).await;
    // Connections to every member (the balancer picks at random), so the frozen one keeps an
    // open connection that never answers rather than failing to connect.
    for _ in 0..30 {
        store.get_cluster_data_raw().await.unwrap();
    }

    // Freeze the leader (the hardest case: an election follows) and wait for the others to
    // agree on a new one.
    let frozen = cluster.leader();
    cluster.members[frozen].signal(Signal::SIGSTOP);
    let others: Vec<usize> = (0..3).filter(|&i| i != frozen).collect();
    cluster.leader_among(&others);

    // A burst of requests: the first one sent to the frozen member goes unanswered, and from
    // then on the client sends them elsewhere. Without that, about a third of them would wait
    // for the request timeout (the balancer picks the frozen member as often as the others).
    let n = 40;
    let t = Instant::now();
    let mut failures = Vec::new();
    for _ in 0..n {
        if let Err(e) = store.get_cluster_data_raw().await {
            failures.push(e.to_string());
        }
    }
    let took = t.elapsed();
    eprintln!("{n} reads with member {frozen} frozen: {took:?}, failures: {failures:?}");
    assert!(
        failures.len() <= 2,
        "{} of {n} requests failed: the frozen member was not passed over: {failures:?}",
        failures.len()
    );
    // Generous: a burst that only waited for the few failed requests.
    assert!(
        took < timeout * 3 + Duration::from_secs(5),
        "{n} reads took {took:?}"
    );
    // Writes too (a lease grant, a put on it), within a couple of request timeouts.
    let deadline = Instant::now() + timeout * 4;
    while let Err(e) = store.put_proxy_info(&proxy_info()).await {
        assert!(Instant::now() < deadline, "writes keep failing: {e}");
    }
    cluster.members[frozen].signal(Signal::SIGCONT);
}

/// A candidate waiting for leadership takes over promptly when the leader goes, even when an
/// etcd member froze meanwhile (as on a frozen or crashed host). etcd's own Campaign request
/// would hang on that member's connection until HTTP/2 keep-alive gives up on it (over 10 s);
/// the campaign waits with short reads instead (src/store/election.rs). One round per member,
/// so whichever member a single long request would have gone to, one round freezes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_candidate_takes_over_while_a_member_is_frozen() {
    let cluster = EtcdCluster::start(3);
    let timeout = Duration::from_secs(2);
    for frozen in 0..3 {
        let name = format!("el{frozen}");
        let live = (frozen + 1) % 3;
        // The leader talks to a member that stays up, so its resignation is never what waits.
        let a = Store::connect(&store_config(
            &cluster.members[live].endpoint(),
            &name,
            Duration::from_secs(10),
        ))
        .await
        .unwrap();
        let b = Store::connect(&store_config(&cluster.endpoints(), &name, timeout))
            .await
            .unwrap();
        wait_readable(&a, Duration::from_secs(30), &cluster).await;
        wait_readable(&b, Duration::from_secs(30), &cluster).await;
        let ea = a.election("sA");
        tokio::time::timeout(Duration::from_secs(10), ea.campaign())
            .await
            .unwrap()
            .unwrap();
        let eb = b.election("sB");
        let eb2 = eb.clone();
        let mut waiting = tokio::spawn(async move { eb2.campaign().await });
        // B's candidacy is made and it is waiting (its requests reached every member by now).
        assert!(
            tokio::time::timeout(Duration::from_secs(1), &mut waiting)
                .await
                .is_err(),
            "B must wait while A leads"
        );

        cluster.members[frozen].signal(Signal::SIGSTOP);
        // When the frozen member led etcd, the others elect a new leader first.
        let others: Vec<usize> = (0..3).filter(|&i| i != frozen).collect();
        cluster.leader_among(&others);
        ea.resign().await.unwrap();
        let t = Instant::now();
        let won = tokio::time::timeout(Duration::from_secs(8), waiting).await;
        let took = t.elapsed();
        cluster.members[frozen].signal(Signal::SIGCONT);
        eprintln!("member {frozen} frozen: B elected {took:?} after A resigned");
        won.unwrap_or_else(|_| {
            panic!(
                "B still waiting {took:?} after A resigned, member {frozen} frozen\n{}",
                cluster.log_tails(20)
            )
        })
        .unwrap()
        .unwrap();
        assert!(eb.is_leader());
        eb.resign().await.unwrap();
    }
}

/// Waits until the watch tells of proxy info `uid`: its own event, or the ClusterData event a
/// re-established watch sends (whatever changed while it was blind is then read). None when
/// `within` passed first.
async fn proxy_event(
    store: &Store,
    rx: &mut tokio::sync::mpsc::Receiver<StoreEvent>,
    uid: &str,
    within: Duration,
) -> Option<()> {
    tokio::time::timeout(within, async {
        while let Some(ev) = rx.recv().await {
            match &ev {
                StoreEvent::ProxyInfo { uid: u, .. } if u == uid => return,
                StoreEvent::ClusterData => {
                    if let Ok(infos) = store.get_proxies_info().await
                        && infos.contains_key(uid)
                    {
                        return;
                    }
                }
                _ => {}
            }
        }
        std::future::pending::<()>().await
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_frozen_member_moves_to_a_live_one() {
    let cluster = EtcdCluster::start(3);
    for round in 0..2 {
        let watcher = Store::connect(&store_config(
            &cluster.endpoints(),
            "wt",
            Duration::from_secs(2),
        ))
        .await
        .unwrap();
        wait_readable(&watcher, Duration::from_secs(30), &cluster).await;
        let mut rx = watcher.watch().await.unwrap();
        // Freeze the member the watch is on (the only watch in this etcd cluster).
        let frozen = (0..3)
            .find(|&i| cluster.members[i].watchers().unwrap_or(0) > 0)
            .expect("one member serves the watch");
        let live = (frozen + 1) % 3;
        let writer = Store::connect(&store_config(
            &cluster.members[live].endpoint(),
            "wt",
            Duration::from_secs(10),
        ))
        .await
        .unwrap();
        let mut info = proxy_info();
        info.uid = format!("before{round}");
        writer.put_proxy_info(&info).await.unwrap();
        assert!(
            proxy_event(&watcher, &mut rx, &info.uid, Duration::from_secs(10))
                .await
                .is_some(),
            "the watch works before the fault"
        );

        cluster.members[frozen].signal(Signal::SIGSTOP);
        let frozen_at = Instant::now();
        let others: Vec<usize> = (0..3).filter(|&i| i != frozen).collect();
        cluster.leader_among(&others);
        info.uid = format!("after{round}");
        writer.put_proxy_info(&info).await.unwrap();
        // HTTP/2 keep-alive alone notices a frozen member after 10 s and more: the watch must
        // have moved on well before (its progress request goes unanswered after 1.5 s).
        let seen = proxy_event(&watcher, &mut rx, &info.uid, Duration::from_secs(6)).await;
        cluster.members[frozen].signal(Signal::SIGCONT);
        eprintln!(
            "member {frozen} (the watch's) frozen: event seen {:?} after the freeze",
            seen.map(|_| frozen_at.elapsed())
        );
        assert!(
            seen.is_some(),
            "no watch event 6 s after a write, member {frozen} frozen\n{}",
            cluster.log_tails(20)
        );
        drop(rx);
        // The next round finds one watch again: this one's end reaches etcd first.
        let deadline = Instant::now() + Duration::from_secs(10);
        while (0..3).any(|i| cluster.members[i].watchers().unwrap_or(0) > 0) {
            assert!(Instant::now() < deadline, "the dropped watch never ended");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
