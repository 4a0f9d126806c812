//! `stolonctl switchover` on real processes: the target is promoted with every acknowledged
//! write, the old master follows it with its own data (same db, no resync or rewind), and a
//! switchover whose target cannot catch up is rolled back to the old master, which serves again.

use crate::support;

use nix::sys::signal::Signal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::{Cluster, ClusterBuilder, wait_for, wait_until};

/// A two-keeper cluster with table `t` replicated; returns it with (master, standby).
fn cluster(name: &str) -> (Cluster, String, String) {
    let c = ClusterBuilder::new(name).keepers(2).sentinels(1).start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.other_keeper(&master);
    c.replicate_first_row(&standby, "before");
    c.wait_dbs_converged(2, Duration::from_secs(60));
    (c, master, standby)
}

#[test]
fn planned_switchover_keeps_every_write_and_the_old_master_follows_with_its_data() {
    let (c, old, target) = cluster("planned-switchover");
    let old_db = c.wait_keeper_db(&old);
    let target_db = c.wait_keeper_db(&target);
    // Writes through the proxy during the switchover, each on a new connection: the ones
    // acknowledged must all be on the new master.
    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = AtomicUsize::new(0);
    let acknowledged = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut acked = Vec::new();
            let mut id = 100;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                if c.psql_via_proxy(&format!("insert into t values ({id}, 'during')"))
                    .is_ok()
                {
                    acked.push(id);
                    acked_count.fetch_add(1, Ordering::Relaxed);
                }
                // The client's pace: a write every 20 ms.
                std::thread::sleep(Duration::from_millis(20));
            }
            acked
        });
        let out = c.stolonctl_ok(&["switchover", "--to", &target, "--timeout", "60s", "-y"]);
        eprintln!("{out}");
        assert!(out.contains("switchover done"), "{out}");
        // A few more writes on the new master.
        let before = acked_count.load(Ordering::Relaxed);
        wait_until(
            Duration::from_secs(30),
            "writes acknowledged by the new master",
            || acked_count.load(Ordering::Relaxed) >= before + 5,
        );
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap()
    });
    let cd = c.clusterdata();
    assert_eq!(
        Cluster::master_keeper_in(&cd).as_deref(),
        Some(target.as_str())
    );
    assert_eq!(cd["cluster"]["status"]["switchover"]["stage"], "done");
    let rows = c
        .psql_via_proxy("select id from t where v = 'during'")
        .unwrap();
    let stored: std::collections::BTreeSet<i32> = rows
        .iter()
        .filter_map(|r| r[0].as_deref()?.parse().ok())
        .collect();
    let lost: Vec<&i32> = acknowledged
        .iter()
        .filter(|id| !stored.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(!acknowledged.is_empty(), "no write went through at all");

    // The old master streams from the new one under its own db: it was neither resynced
    // nor rewound.
    wait_until(
        Duration::from_secs(60),
        "the old master to stream from the new one",
        || c.streaming_standbys(&target) == Some(1),
    );
    assert_eq!(c.wait_keeper_db(&old), old_db);
    assert_eq!(c.wait_keeper_db(&target), target_db);
    c.wait_keeper_rows(
        &old,
        "select v from t where id = 1",
        &["before"],
        Duration::from_secs(30),
    );
    let log = c.keeper_log(&old);
    assert!(
        !log.contains("pg_basebackup"),
        "the old master was resynced"
    );
    assert!(!log.contains("pg_rewind"), "the old master was rewound");
}

#[test]
fn switchover_whose_target_cannot_catch_up_is_rolled_back() {
    let (mut c, old, target) = cluster("switchover-rollback");
    c.allow_error("switchover rolled back");
    // The target's keeper frozen: it never reports having received the old master's last WAL.
    c.signal_keeper_process(&target, Signal::SIGSTOP);
    let out = c.stolonctl(&["switchover", "--to", &target, "--timeout", "3s", "-y"]);
    c.signal_keeper_process(&target, Signal::SIGCONT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("rolled back"), "{stderr}");
    let cd = c.clusterdata();
    assert_eq!(
        Cluster::master_keeper_in(&cd).as_deref(),
        Some(old.as_str())
    );
    assert_eq!(cd["cluster"]["status"]["switchover"]["stage"], "rolledBack");
    // The old master serves writes through the proxy again, with its data.
    wait_for(
        Duration::from_secs(60),
        "writes through the proxy again",
        || c.psql_via_proxy("insert into t values (2, 'after')").ok(),
    );
    let rows = c.psql_via_proxy("select count(*) from t").unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("2"));
    assert_eq!(c.proxy_backend().ok().as_deref(), Some(old.as_str()));
    c.wait_healthy_standby(&target, None);
}
