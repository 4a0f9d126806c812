//! Synchronous replication with real PostgreSQL: a commit waits while its synchronous standby
//! is gone and completes when it returns; a keeper started with
//! `--can-be-synchronous-replica=false` is never in the set; a failover elects only a standby
//! that was in it; with `minSynchronousStandbys: 0` commits go through without any standby.

use crate::support;

use serde_json::{Value, json};
use std::sync::mpsc;
use std::time::Duration;
use support::{Cluster, ClusterBuilder, stays_true, wait_for, wait_until};

/// The db uids the master's spec names as synchronous standbys.
fn sync_set(cd: &Value) -> Option<Vec<String>> {
    let master = cd["cluster"]["status"]["master"].as_str()?;
    Some(
        cd["dbs"][master]["spec"]["synchronousStandbys"]
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
    )
}

#[test]
fn a_commit_waits_for_its_synchronous_standby_and_only_it_may_replace_the_master() {
    let mut c = ClusterBuilder::new("sync")
        .keepers(2)
        .sentinels(1)
        .spec(json!({
            "synchronousReplication": true,
            "minSynchronousStandbys": 1,
            "maxSynchronousStandbys": 1,
        }))
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    let sync = c.keepers.keys().find(|k| **k != master).unwrap().clone();
    // Never master, never synchronous: a plain async standby next to the synchronous one.
    c.add_keeper(
        "keeper2",
        &[
            "--can-be-synchronous-replica=false",
            "--can-be-master=false",
        ],
    );
    wait_until(
        Duration::from_secs(120),
        "both standbys streaming from the master",
        || c.streaming_standbys(&master) == Some(2),
    );
    let sync_db = c.wait_keeper_db(&sync);
    wait_until(
        Duration::from_secs(60),
        "the synchronous set to be the standby that may be synchronous",
        || c.try_clusterdata().and_then(|cd| sync_set(&cd)) == Some(vec![sync_db.clone()]),
    );
    c.psql_via_proxy("create table t (id int primary key)")
        .unwrap();

    // The synchronous standby dies: the set keeps it (keeper2 may not replace it), so a commit
    // waits for it.
    c.kill_keeper(&sync);
    let session = c.connect(c.keepers[&master].pg_port).unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let waiting = std::thread::spawn(move || {
        let result = session.query_within("insert into t values (1)", Duration::from_secs(180));
        let _ = done_tx.send(result);
    });
    stays_true(
        Duration::from_secs(5),
        "the commit waits while no synchronous standby is connected",
        || done_rx.try_recv().is_err(),
    );
    // The sentinel may name a fake standby in the dead one's place (commits keep blocking),
    // never keeper2.
    let keeper2_db = c.wait_keeper_db("keeper2");
    let set = c.try_clusterdata().and_then(|cd| sync_set(&cd));
    assert!(
        set.as_ref().is_some_and(|s| !s.contains(&keeper2_db)),
        "keeper2 must not have joined the synchronous set: {set:?}"
    );
    c.start_keeper(&sync);
    let committed = done_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the commit to complete once the synchronous standby is back");
    assert!(committed.is_ok(), "{committed:?}");
    waiting.join().unwrap();

    // The master dies: only the synchronous standby has every acknowledged commit.
    wait_until(
        Duration::from_secs(60),
        "the synchronous standby streaming again",
        || c.streaming_standbys(&master) == Some(2),
    );
    c.kill_keeper(&master);
    let new_master = wait_for(
        Duration::from_secs(90),
        "a new master taking writes through the proxy",
        || {
            let cd = c.try_clusterdata()?;
            let m = Cluster::master_keeper_in(&cd)?;
            if m == master {
                return None;
            }
            c.psql_via_proxy("select 1 where not pg_is_in_recovery()")
                .ok()
                .filter(|r| !r.is_empty())
                .map(|_| m)
        },
    );
    assert_eq!(
        new_master, sync,
        "only the synchronous standby may be elected"
    );
    let rows = c.psql_via_proxy("select id from t").unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("1"));
}

#[test]
fn with_no_standby_required_commits_go_through_without_one() {
    let mut c = ClusterBuilder::new("sync-min0")
        .keepers(2)
        .sentinels(1)
        .spec(json!({
            "synchronousReplication": true,
            "minSynchronousStandbys": 0,
            "maxSynchronousStandbys": 1,
        }))
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.keepers.keys().find(|k| **k != master).unwrap().clone();
    let standby_db = c.wait_keeper_db(&standby);
    wait_until(
        Duration::from_secs(120),
        "the standby in the synchronous set",
        || c.try_clusterdata().and_then(|cd| sync_set(&cd)) == Some(vec![standby_db.clone()]),
    );
    c.psql_via_proxy("create table t (id int primary key)")
        .unwrap();
    c.kill_keeper(&standby);
    // Commits made before the sentinel drops the dead standby from the set wait for it; then
    // every commit goes through with no standby at all.
    let session = c.connect(c.keepers[&master].pg_port).unwrap();
    let mut id = 0;
    wait_until(
        Duration::from_secs(90),
        "a commit that does not wait for the dead standby",
        || {
            id += 1;
            session
                .query_within(
                    &format!("insert into t values ({id})"),
                    Duration::from_secs(2),
                )
                .is_ok()
        },
    );
    assert_eq!(
        c.try_clusterdata().and_then(|cd| sync_set(&cd)),
        Some(vec![]),
        "the dead standby left the synchronous set"
    );
    for more in 1000..1005 {
        session
            .query_within(
                &format!("insert into t values ({more})"),
                Duration::from_secs(2),
            )
            .expect("commits go through with no standby");
    }
}

/// Whether user `app` (not the superuser) gets a session on `port`.
fn app_can_connect(c: &Cluster, port: u16) -> bool {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user("app")
        .password("app-pw")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(3));
    c.rt_block_on(async move {
        match tokio::time::timeout(Duration::from_secs(5), cfg.connect(tokio_postgres::NoTls)).await
        {
            Ok(Ok((client, conn))) => {
                drop(client);
                let _ = conn.await;
                true
            }
            _ => false,
        }
    })
}

#[test]
fn a_restarted_synchronous_master_keeps_clients_out_until_its_standby_is_in_sync() {
    // failInterval well above a keeper restart: the master is restarted, not replaced.
    let mut c = ClusterBuilder::new("sync-restart")
        .keepers(2)
        .sentinels(1)
        .spec(json!({
            "synchronousReplication": true,
            "minSynchronousStandbys": 1,
            "maxSynchronousStandbys": 1,
            "failInterval": "60s",
        }))
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.keepers.keys().find(|k| **k != master).unwrap().clone();
    let standby_db = c.wait_keeper_db(&standby);
    wait_until(
        Duration::from_secs(120),
        "the standby in the synchronous set",
        || c.try_clusterdata().and_then(|cd| sync_set(&cd)) == Some(vec![standby_db.clone()]),
    );
    c.psql_via_proxy("create role app login password 'app-pw'")
        .unwrap();
    let port = c.keepers[&master].pg_port;
    assert!(app_can_connect(&c, port));

    c.kill_keeper(&standby);
    c.kill_keeper(&master);
    c.start_keeper(&master);
    wait_until(
        Duration::from_secs(60),
        "the restarted master to accept the keeper's own connections",
        || c.psql_keeper(&master, "select 1").is_ok(),
    );
    stays_true(
        Duration::from_secs(4),
        "clients kept out while the synchronous standby is not in sync",
        || !app_can_connect(&c, port),
    );
    c.start_keeper(&standby);
    wait_until(
        Duration::from_secs(120),
        "clients let in once the synchronous standby is in sync again",
        || app_can_connect(&c, port),
    );
    assert_eq!(c.master_keeper().as_deref(), Some(master.as_str()));
}
