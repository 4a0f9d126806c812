//! (b) SIGKILL the master's keeper and postgres: a standby is promoted, the proxy routes to it,
//! the data is there and new writes succeed. The other standby follows the new master without a
//! restart (PostgreSQL >= 13 reloads primary_conninfo): same postmaster, and a session opened
//! on it before the failover still answers. (e) The old master's keeper comes back: it rejoins
//! as a standby of the new master and gets the writes made after the failover.

use crate::support;

use std::time::{Duration, Instant};
use support::{Cluster, ClusterBuilder, Session, wait_for, wait_until};

#[test]
fn killed_master_is_replaced_and_rejoins_as_standby() {
    let mut c = ClusterBuilder::new("failover")
        .keepers(3)
        .sentinels(2)
        .start();
    let old_master = c.wait_master_serving(Duration::from_secs(150));
    wait_until(
        Duration::from_secs(120),
        "2 streaming standbys before the failover",
        || c.streaming_standbys(&old_master) == Some(2),
    );
    c.psql_via_proxy("create table t (id int primary key, v text)")
        .unwrap();
    c.psql_via_proxy("insert into t values (1, 'before failover')")
        .unwrap();
    for uid in c.keepers.keys() {
        c.wait_keeper_rows(
            uid,
            "select v from t where id = 1",
            &["before failover"],
            Duration::from_secs(30),
        );
    }

    // (b)
    let standbys: Vec<(String, i32, Session)> = c
        .keepers
        .iter()
        .filter(|(uid, _)| **uid != old_master)
        .map(|(uid, k)| {
            let pid = k.postmaster_pid().expect("a standby's postmaster.pid");
            (uid.clone(), pid, c.connect(k.pg_port).unwrap())
        })
        .collect();
    let killed_at = Instant::now();
    c.kill_keeper(&old_master);
    let new_master = wait_for(
        Duration::from_secs(60),
        "a standby to be elected master and the proxy to route writes to it",
        || {
            let cd = c.try_clusterdata()?;
            let m = Cluster::master_keeper_in(&cd)?;
            if m == old_master || c.proxy_backend().ok()? != m {
                return None;
            }
            let ro = c.psql_via_proxy("select pg_is_in_recovery()").ok()?;
            (ro[0][0].as_deref() == Some("f")).then_some(m)
        },
    );
    eprintln!("failover to {new_master} took {:?}", killed_at.elapsed());
    let (survivor, pid_before, session) = standbys
        .iter()
        .find(|(uid, _, _)| *uid != new_master)
        .unwrap();
    let new_master_port = c.keepers[&new_master].pg_port.to_string();
    wait_until(
        Duration::from_secs(60),
        "the other standby to stream from the new master",
        || {
            c.psql_keeper(
                survivor,
                "select status, sender_port from pg_stat_wal_receiver",
            )
            .is_ok_and(|rows| {
                rows.first().is_some_and(|r| {
                    r[0].as_deref() == Some("streaming")
                        && r[1].as_deref() == Some(new_master_port.as_str())
                })
            })
        },
    );
    assert_eq!(
        c.keepers[survivor].postmaster_pid(),
        Some(*pid_before),
        "the other standby's postgres was restarted to follow the new master"
    );
    let ro = session
        .query("select pg_is_in_recovery()")
        .expect("a session opened on the other standby before the failover must survive it");
    assert_eq!(ro[0][0].as_deref(), Some("t"));
    eprintln!(
        "{survivor} streams from {new_master} (port {new_master_port}) with the same postmaster (pid {pid_before})"
    );
    let rows = c.psql_via_proxy("select v from t where id = 1").unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("before failover"));
    wait_until(
        Duration::from_secs(30),
        "a write through the proxy after the failover",
        || {
            c.psql_via_proxy("insert into t values (2, 'after failover') on conflict do nothing")
                .is_ok()
        },
    );

    // (e)
    c.start_keeper(&old_master);
    c.wait_healthy_standby(&old_master, None);
    c.wait_keeper_rows(
        &old_master,
        "select v from t order by id",
        &["before failover", "after failover"],
        Duration::from_secs(60),
    );
    let ro = c
        .psql_keeper(&old_master, "select pg_is_in_recovery()")
        .unwrap();
    assert_eq!(
        ro[0][0].as_deref(),
        Some("t"),
        "the old master must come back read-only"
    );
    assert_eq!(
        c.master_keeper().as_deref(),
        Some(new_master.as_str()),
        "master changed again"
    );
    wait_until(
        Duration::from_secs(60),
        "the new master to stream to 2 standbys again",
        || c.streaming_standbys(&new_master) == Some(2),
    );
}

/// The master's host dies with the leader sentinel on it (both killed at once). The other
/// sentinel has been judging keeper health as a follower all along, so once it leads it fails
/// the master over from what it saw, instead of starting with an empty memory and waiting
/// failInterval before it may judge anything (upstream's rule, src/sentinel/memory.rs).
#[test]
fn leader_sentinel_dying_with_the_master_hands_over_its_judgement() {
    let mut c = ClusterBuilder::new("leaderdies")
        .keepers(2)
        .sentinels(2)
        .start();
    let old_master = c.wait_master_serving(Duration::from_secs(150));
    // Rows replayed on the standby: it is streaming (not just taking its base backup, whose
    // WAL stream pg_stat_replication also lists).
    c.psql_via_proxy("create table t (id int primary key)")
        .unwrap();
    c.psql_via_proxy("insert into t values (1)").unwrap();
    for uid in c.keepers.keys() {
        c.wait_keeper_rows(uid, "select id from t", &["1"], Duration::from_secs(60));
    }
    // The sentinel leading now (leadership may have moved once at start: a sentinel replaces
    // a lease granted before the spec existed, src/sentinel/mod.rs).
    let uid_of = |i: usize| -> Option<String> {
        let log = c.sentinel_log(i);
        let (_, rest) = log.split_once("sentinel starting sentinel=")?;
        Some(rest.split_whitespace().next()?.to_string())
    };
    let leader = wait_for(Duration::from_secs(30), "a sentinel leader", || {
        let status: serde_json::Value =
            serde_json::from_str(&c.stolonctl_ok(&["status", "--format", "json"])).ok()?;
        let uid = status["sentinels"]
            .as_array()?
            .iter()
            .find(|s| s["leader"] == true)?["uid"]
            .as_str()?
            .to_string();
        (0..2).find(|&i| uid_of(i).as_deref() == Some(uid.as_str()))
    });
    let follower = 1 - leader;
    let elections_before = c
        .sentinel_log(follower)
        .matches("elected sentinel leader")
        .count();

    let killed_at = Instant::now();
    c.kill_sentinel(leader);
    c.kill_keeper(&old_master);
    let new_master = wait_for(
        Duration::from_secs(60),
        "the standby to be elected master by the other sentinel",
        || Cluster::master_keeper_in(&c.try_clusterdata()?).filter(|m| *m != old_master),
    );
    eprintln!(
        "leader sentinel and master killed: {new_master} elected after {:?}",
        killed_at.elapsed()
    );
    let log = c.sentinel_log(follower);
    let since_elected = log
        .split("elected sentinel leader")
        .nth(elections_before + 1)
        .expect("the follower was elected");
    assert!(
        since_elected.contains("leading: judging keeper health from what this sentinel observed"),
        "{since_elected}"
    );
    assert!(
        !since_elected.contains("first check"),
        "the new leader started with an empty memory:\n{since_elected}"
    );
}
