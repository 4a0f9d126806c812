//! Ways a keeper comes back: removed with `stolonctl removekeeper` while running, with its data
//! directory wiped (copied again under its db, no operator needed), with its master on a new
//! port, and a standby that went ahead of the new
//! master on the old timeline (a fork): each ends as a standby streaming from the master with
//! the master's data, never following a timeline it is not on.

use crate::support;

use nix::sys::signal::Signal;
use serde_json::json;
use std::time::Duration;
use support::{Cluster, ClusterBuilder, free_port, procs, wait_for, wait_until};

/// Waits until `keeper` holds a db other than `old_db`, healthy, streaming from the master,
/// with `rows`.
fn wait_new_standby_db(c: &Cluster, keeper: &str, old_db: &str, rows: &[&str]) {
    c.wait_healthy_standby(keeper, Some(old_db));
    c.wait_keeper_rows(
        keeper,
        "select v from t order by id",
        rows,
        Duration::from_secs(120),
    );
}

#[test]
fn a_removed_keeper_rejoins_with_a_new_db() {
    let c = ClusterBuilder::new("removekeeper")
        .keepers(2)
        .sentinels(1)
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.other_keeper(&master);
    c.replicate_first_row(&standby, "first");
    let old_db = c.wait_keeper_db(&standby);
    let refused = c.stolonctl(&["removekeeper", &master]);
    assert!(
        !refused.status.success(),
        "the master's keeper cannot be removed"
    );
    c.stolonctl_ok(&["removekeeper", &standby]);
    c.psql_via_proxy("insert into t values (2, 'after the removal')")
        .unwrap();
    wait_new_standby_db(&c, &standby, &old_db, &["first", "after the removal"]);
}

#[test]
fn a_standby_whose_data_dir_was_wiped_is_copied_again() {
    let mut c = ClusterBuilder::new("wiped").keepers(2).sentinels(1).start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.other_keeper(&master);
    c.replicate_first_row(&standby, "first");
    let db = c.wait_keeper_db(&standby);
    c.kill_keeper(&standby);
    let dir = c.keepers[&standby].data_dir.clone();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    c.start_keeper(&standby);
    c.psql_via_proxy("insert into t values (2, 'while it was away')")
        .unwrap();
    c.wait_keeper_rows(
        &standby,
        "select v from t order by id",
        &["first", "while it was away"],
        Duration::from_secs(150),
    );
    assert_eq!(
        c.wait_keeper_db(&standby),
        db,
        "copied again under the same db"
    );
}

#[test]
fn a_master_back_on_a_new_port_is_followed_there() {
    // failInterval above the keeper's restart: the master comes back, it is not replaced.
    let mut c = ClusterBuilder::new("newport")
        .keepers(2)
        .sentinels(1)
        .spec(json!({"failInterval": "60s"}))
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.other_keeper(&master);
    c.replicate_first_row(&standby, "first");
    c.kill_keeper(&master);
    let new_port = free_port();
    c.keepers.get_mut(&master).unwrap().pg_port = new_port;
    c.start_keeper(&master);
    wait_until(
        Duration::from_secs(90),
        "the proxy routing writes to the master's new port",
        || {
            c.psql_via_proxy("select inet_server_port()")
                .is_ok_and(|r| r[0][0].as_deref() == Some(new_port.to_string().as_str()))
                && c.psql_via_proxy(
                    "insert into t values (2, 'on the new port') on conflict do nothing",
                )
                .is_ok()
        },
    );
    assert_eq!(c.master_keeper().as_deref(), Some(master.as_str()));
    wait_until(
        Duration::from_secs(90),
        "the standby streaming from the new port",
        || {
            c.psql_keeper(
                &standby,
                "select sender_port::text from pg_stat_wal_receiver where status = 'streaming'",
            )
            .is_ok_and(|r| {
                r.first().and_then(|r| r[0].as_deref()) == Some(new_port.to_string().as_str())
            })
        },
    );
    c.wait_keeper_rows(
        &standby,
        "select v from t order by id",
        &["first", "on the new port"],
        Duration::from_secs(60),
    );
}

#[test]
fn a_standby_ahead_on_the_old_timeline_is_resynced_never_followed() {
    standby_ahead_on_the_old_timeline("fork", false);
}

#[test]
fn a_standby_ahead_on_the_old_timeline_is_rewound_with_use_pg_rewind() {
    standby_ahead_on_the_old_timeline("fork-rewind", true);
}

fn standby_ahead_on_the_old_timeline(name: &str, use_pg_rewind: bool) {
    let mut c = ClusterBuilder::new(name)
        .keepers(2)
        .sentinels(1)
        .spec(json!({"usePgrewind": use_pg_rewind}))
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    let eligible = c.other_keeper(&master);
    // Never master: it stays the standby that got further than the one elected.
    c.add_keeper("keeper2", &["--can-be-master=false"]);
    wait_until(Duration::from_secs(120), "both standbys streaming", || {
        c.streaming_standbys(&master) == Some(2)
    });
    c.replicate_first_row(&eligible, "first");
    c.wait_keeper_rows(
        "keeper2",
        "select v from t order by id",
        &["first"],
        Duration::from_secs(60),
    );
    let ahead_db = c.wait_keeper_db("keeper2");

    // The eligible standby's walsender freezes; keeper2 gets one more commit; the master dies.
    let eligible_app = format!("stolon_{}", c.wait_keeper_db(&eligible));
    let sender = c
        .psql_keeper(
            &master,
            &format!(
                "select pid from pg_stat_replication where application_name = '{eligible_app}'"
            ),
        )
        .unwrap()[0][0]
        .clone()
        .and_then(|p| p.parse::<i32>().ok())
        .expect("the eligible standby's walsender");
    procs::signal_pid(sender, Signal::SIGSTOP);
    c.psql_via_proxy("insert into t values (2, 'only keeper2 got this')")
        .unwrap();
    c.wait_keeper_rows(
        "keeper2",
        "select v from t order by id",
        &["first", "only keeper2 got this"],
        Duration::from_secs(60),
    );
    c.kill_keeper(&master);
    procs::signal_pid(sender, Signal::SIGKILL);

    let new_master = wait_for(
        Duration::from_secs(90),
        "the eligible standby to be elected and take writes",
        || {
            let cd = c.try_clusterdata()?;
            let m = Cluster::master_keeper_in(&cd)?;
            (m != master
                && c.psql_via_proxy(
                    "insert into t values (3, 'on the new timeline') on conflict do nothing",
                )
                .is_ok())
            .then_some(m)
        },
    );
    assert_eq!(new_master, eligible);
    // keeper2's WAL went past the fork: it must be copied again, never follow.
    wait_new_standby_db(&c, "keeper2", &ahead_db, &["first", "on the new timeline"]);
    let log = c.keeper_log("keeper2");
    assert_eq!(
        log.contains("pg_rewind done"),
        use_pg_rewind,
        "usePgrewind {use_pg_rewind}: rewound or copied in full as asked:\n{log}"
    );
}

#[test]
fn a_standby_the_masters_wal_left_behind_is_replaced_by_a_new_copy() {
    // Little WAL kept for a dead standby (the keeper keeps wal_keep_size at 128MB), and
    // checkpoints that remove it soon.
    let mut c = ClusterBuilder::new("walgone")
        .keepers(2)
        .sentinels(1)
        .spec(json!({
            "maxSlotWalKeepSize": "32MB",
            "pgParameters": {"max_wal_size": "64MB", "min_wal_size": "32MB"},
        }))
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.other_keeper(&master);
    c.replicate_first_row(&standby, "first");
    let old_db = c.wait_keeper_db(&standby);
    c.kill_keeper(&standby);
    // About 300 MB of WAL the standby never gets, then checkpoints that remove it.
    c.psql_via_proxy(
        "create table big as select g, repeat('x', 900) as pad from generate_series(1, 300000) g",
    )
    .unwrap();
    for _ in 0..3 {
        c.psql_via_proxy("select pg_switch_wal(); checkpoint")
            .unwrap();
    }
    c.psql_via_proxy("insert into t values (2, 'after the gap')")
        .unwrap();
    c.start_keeper(&standby);
    wait_new_standby_db(&c, &standby, &old_db, &["first", "after the gap"]);
}
