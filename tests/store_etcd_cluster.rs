//! The store client on a real 3-member etcd cluster: a member cut off from its peers answers at
//! once that it has no leader (the client requires one, as etcd's Go client's
//! WithRequireLeader), and a frozen member (its socket open, no answers) is passed over after
//! one unanswered request instead of taking a share of all requests down with it.

mod support;

use nix::sys::signal::Signal;
use std::time::{Duration, Instant};
use stolon::cluster::{ProxyInfo, new_uid};
use stolon::store::{Store, StoreError};
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
        generation: 1,
        proxy_timeout_ns: 15_000_000_000,
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
