//! A standby cluster: created by pg_basebackup from another cluster's master (initMode pitr,
//! role standby), its head follows that external primary through a slot there, its own standby
//! cascades from the head (with its slot on the head), a failover inside it keeps following the
//! primary, and `stolonctl promote` turns it into a primary cluster that takes writes.

use crate::support;

use serde_json::json;
use std::path::Path;
use std::time::Duration;
use support::{Cluster, ClusterBuilder, REPL_PASSWORD, REPL_USER, pg_bin, wait_for, wait_until};

fn wal_sender_port(c: &Cluster, keeper: &str) -> Option<String> {
    let rows = c
        .psql_keeper(
            keeper,
            "select sender_port::text from pg_stat_wal_receiver where status = 'streaming'",
        )
        .ok()?;
    rows.first().and_then(|r| r[0].clone())
}

#[test]
fn a_standby_cluster_cascades_from_its_head_and_is_promoted() {
    let primary = ClusterBuilder::new("primary")
        .keepers(1)
        .sentinels(1)
        .spec(json!({"additionalMasterReplicationSlots": ["standby_cluster"]}))
        .start();
    let primary_master = primary.wait_master_serving(Duration::from_secs(150));
    let primary_port = primary.keepers[&primary_master].pg_port;
    primary
        .psql_via_proxy("create table t (id int primary key, v text)")
        .unwrap();
    primary
        .psql_via_proxy("insert into t values (1, 'before the standby cluster')")
        .unwrap();

    let basebackup = Path::new(&pg_bin()).join("pg_basebackup");
    let mut c = ClusterBuilder::new("standby-cluster")
        .keepers(2)
        .sentinels(1)
        .spec(json!({
            "initMode": "pitr",
            "role": "standby",
            "pitrConfig": {
                "dataRestoreCommand": format!(
                    "PGPASSWORD={REPL_PASSWORD} {} -D %d -h 127.0.0.1 -p {primary_port} -U {REPL_USER} -X stream",
                    basebackup.display()
                ),
            },
            "standbyConfig": {
                "standbySettings": {
                    "primaryConninfo": format!(
                        "host=127.0.0.1 port={primary_port} user={REPL_USER} password={REPL_PASSWORD}"
                    ),
                    "primarySlotName": "stolon_standby_cluster",
                },
            },
        }))
        .start();
    let head = wait_for(
        Duration::from_secs(150),
        "the standby cluster initialised, its head streaming from the primary",
        || {
            let cd = c.try_clusterdata()?;
            if cd["cluster"]["status"]["phase"] != "normal" {
                return None;
            }
            let head = Cluster::master_keeper_in(&cd)?;
            (wal_sender_port(&c, &head)? == primary_port.to_string()).then_some(head)
        },
    );
    let cascaded = c.keepers.keys().find(|k| **k != head).unwrap().clone();
    let head_port = c.keepers[&head].pg_port.to_string();
    wait_until(
        Duration::from_secs(120),
        "the standby cluster's standby streaming from its head",
        || wal_sender_port(&c, &cascaded).as_deref() == Some(head_port.as_str()),
    );
    let head_slots = c
        .psql_keeper(&head, "select slot_name from pg_replication_slots")
        .unwrap();
    let cd = c.clusterdata();
    let cascaded_db = Cluster::keeper_db(&cd, &cascaded).unwrap();
    assert!(
        head_slots
            .iter()
            .any(|r| r[0].as_deref() == Some(format!("stolon_{cascaded_db}").as_str())),
        "the head keeps its standby's slot: {head_slots:?}"
    );

    primary
        .psql_via_proxy("insert into t values (2, 'written on the primary')")
        .unwrap();
    let both = ["before the standby cluster", "written on the primary"];
    c.wait_keeper_rows(
        &cascaded,
        "select v from t order by id",
        &both,
        Duration::from_secs(60),
    );
    assert!(
        c.psql_keeper(&head, "insert into t values (9, 'no')")
            .is_err(),
        "a standby cluster must not take writes"
    );

    // The head dies: the standby cluster's other keeper becomes its head and follows the
    // external primary itself.
    c.kill_keeper(&head);
    wait_until(
        Duration::from_secs(90),
        "the other keeper to head the standby cluster, streaming from the primary",
        || {
            c.try_clusterdata()
                .and_then(|cd| Cluster::master_keeper_in(&cd))
                .is_some_and(|m| m == cascaded)
                && wal_sender_port(&c, &cascaded).as_deref()
                    == Some(primary_port.to_string().as_str())
        },
    );
    primary
        .psql_via_proxy("insert into t values (3, 'after the standby cluster failover')")
        .unwrap();
    let three = [both[0], both[1], "after the standby cluster failover"];
    c.wait_keeper_rows(
        &cascaded,
        "select v from t order by id",
        &three,
        Duration::from_secs(60),
    );

    drop(primary);
    // The primary is gone: the head's WAL receiver complains until the promotion.
    c.allow_error("could not connect to the primary server");
    c.stolonctl_ok(&["promote", "-y"]);
    wait_until(
        Duration::from_secs(120),
        "the promoted cluster to take writes through its proxy",
        || {
            c.psql_via_proxy(
                "insert into t values (4, 'after the promotion') on conflict do nothing",
            )
            .is_ok()
        },
    );
    c.wait_keeper_rows(
        &cascaded,
        "select v from t order by id",
        &[three[0], three[1], three[2], "after the promotion"],
        Duration::from_secs(60),
    );
}
