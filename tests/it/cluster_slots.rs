//! additionalMasterReplicationSlots: created on the master as `stolon_<name>` (upstream's
//! names), never on a standby, dropped when removed from the spec, created on the new master
//! after a failover; a slot the keeper did not create is left alone.

use crate::support;

use serde_json::json;
use std::time::Duration;
use support::{Cluster, ClusterBuilder, wait_for, wait_until};

fn slots(c: &Cluster, keeper: &str) -> Option<Vec<String>> {
    let rows = c
        .psql_keeper(
            keeper,
            "select slot_name from pg_replication_slots order by slot_name",
        )
        .ok()?;
    Some(rows.into_iter().filter_map(|r| r[0].clone()).collect())
}

/// The slots other than the followers' (`stolon_<db uid>`): the additional ones and any
/// the keeper did not create.
fn extra_slots(c: &Cluster, keeper: &str) -> Option<Vec<String>> {
    let cd = c.try_clusterdata()?;
    let followers: Vec<String> = cd["dbs"]
        .as_object()?
        .keys()
        .map(|db| format!("stolon_{db}"))
        .collect();
    Some(
        slots(c, keeper)?
            .into_iter()
            .filter(|s| !followers.contains(s))
            .collect(),
    )
}

fn wait_extra_slots(c: &Cluster, keeper: &str, want: &[&str], what: &str) {
    wait_until(Duration::from_secs(60), what, || {
        extra_slots(c, keeper).is_some_and(|s| s == want)
    });
}

#[test]
fn additional_slots_live_on_the_master_only_and_follow_the_spec() {
    let mut c = ClusterBuilder::new("slots")
        .keepers(2)
        .sentinels(1)
        .spec(json!({"additionalMasterReplicationSlots": ["backup"]}))
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.keepers.keys().find(|k| **k != master).unwrap().clone();
    wait_until(Duration::from_secs(120), "the standby streaming", || {
        c.psql_keeper(&standby, "select status from pg_stat_wal_receiver")
            .is_ok_and(|r| {
                r.first()
                    .is_some_and(|r| r[0].as_deref() == Some("streaming"))
            })
    });
    wait_extra_slots(
        &c,
        &master,
        &["stolon_backup"],
        "stolon_backup on the master",
    );
    assert_eq!(
        extra_slots(&c, &standby),
        Some(vec![]),
        "a standby has no additional slot"
    );

    c.psql_keeper(
        &master,
        "select pg_create_physical_replication_slot('operators_own')",
    )
    .unwrap();
    c.stolonctl_ok(&[
        "update",
        "--patch",
        r#"{"additionalMasterReplicationSlots": ["archiver"]}"#,
    ]);
    wait_extra_slots(
        &c,
        &master,
        &["operators_own", "stolon_archiver"],
        "stolon_backup dropped and stolon_archiver created, the operator's slot kept",
    );

    c.kill_keeper(&master);
    let new_master = wait_for(
        Duration::from_secs(90),
        "the standby to be elected master",
        || {
            let cd = c.try_clusterdata()?;
            Cluster::master_keeper_in(&cd).filter(|m| *m != master)
        },
    );
    wait_extra_slots(
        &c,
        &new_master,
        &["stolon_archiver"],
        "stolon_archiver on the new master",
    );
}
