//! usePgrewind: a failed master whose WAL went further than its replacement's rejoins with
//! pg_rewind (copying what changed) instead of a full pg_basebackup, and loses exactly the
//! commits its replacement never received. When the rewind cannot work, the keeper says why
//! and falls back to pg_basebackup.

use crate::support;

use nix::sys::signal::Signal;
use serde_json::json;
use std::time::Duration;
use support::{Cluster, ClusterBuilder, procs, wait_for};

/// Waits for a master other than `old` that takes writes through the proxy.
fn wait_new_master(c: &Cluster, old: &str) -> String {
    wait_for(
        Duration::from_secs(90),
        "a standby to be elected master and to take writes through the proxy",
        || {
            let cd = c.try_clusterdata()?;
            let m = Cluster::master_keeper_in(&cd)?;
            if m == old || c.proxy_backend().ok()? != m {
                return None;
            }
            c.psql_via_proxy("insert into t values (3, 'after failover') on conflict do nothing")
                .ok()?;
            Some(m)
        },
    )
}

#[test]
fn diverged_old_master_rejoins_with_pg_rewind() {
    let mut c = ClusterBuilder::new("rewind")
        .keepers(2)
        .sentinels(1)
        .spec(json!({"usePgrewind": true}))
        .start();
    let old_master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.other_keeper(&old_master);
    c.replicate_first_row(&standby, "replicated");

    // The master stops sending (its walsender frozen), commits on alone (async) and dies: its
    // WAL now goes further than the standby's, on a timeline the standby leaves when it is
    // promoted. (Freezing the standby's receiver instead would not do: it would read what
    // the socket buffered once thawed.)
    let sender = c
        .psql_keeper(&old_master, "select pid from pg_stat_replication")
        .unwrap()[0][0]
        .clone()
        .and_then(|p| p.parse::<i32>().ok())
        .expect("the master's walsender pid");
    procs::signal_pid(sender, Signal::SIGSTOP);
    c.psql_via_proxy("insert into t values (2, 'diverged')")
        .unwrap();
    c.kill_keeper(&old_master);
    procs::signal_pid(sender, Signal::SIGKILL);

    let new_master = wait_new_master(&c, &old_master);
    assert_eq!(new_master, standby);

    c.start_keeper(&old_master);
    c.wait_healthy_standby(&old_master, None);
    c.wait_keeper_rows(
        &old_master,
        "select v from t order by id",
        &["replicated", "after failover"],
        Duration::from_secs(60),
    );
    let log = c.keeper_log(&old_master);
    for line in log.lines().filter(|l| l.contains("rewind")) {
        eprintln!("{line}");
    }
    assert!(
        log.contains("pg_rewind done"),
        "the old master was not rewound:\n{log}"
    );
    assert!(
        log.contains("crash recovery before pg_rewind (keeping all WAL)"),
        "a killed master needs crash recovery before the rewind:\n{log}"
    );
    assert!(
        !log.contains("pg_basebackup"),
        "the old master was copied in full after all:\n{log}"
    );
}

/// Waits until the old master rejoined with everything written before and after the failover,
/// copied in full after a failed rewind whose reason the log gives (`why`).
fn assert_fell_back(c: &Cluster, old_master: &str, why: &str) {
    c.wait_healthy_standby(old_master, None);
    c.wait_keeper_rows(
        old_master,
        "select v from t order by id",
        &["replicated", "after failover"],
        Duration::from_secs(60),
    );
    let log = c.keeper_log(old_master);
    for line in log.lines().filter(|l| l.contains("rewind")) {
        eprintln!("{line}");
    }
    assert!(
        log.contains("pg_rewind failed; falling back to a full resync with pg_basebackup"),
        "no fallback logged:\n{log}"
    );
    assert!(
        log.contains(why),
        "the log does not say why pg_rewind failed ({why}):\n{log}"
    );
}

#[test]
fn a_master_whose_wal_is_lost_falls_back_to_pg_basebackup() {
    let mut c = ClusterBuilder::new("rewind-nowal")
        .keepers(2)
        .sentinels(1)
        .spec(json!({"usePgrewind": true}))
        .allow_errors(&["pg_rewind failed", "checkpoint record"])
        .start();
    let old_master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.other_keeper(&old_master);
    c.replicate_first_row(&standby, "replicated");
    c.kill_keeper(&old_master);
    // The disk lost the WAL: neither crash recovery nor pg_rewind can read it.
    let wal = c.keepers[&old_master].data_dir.join("postgres/pg_wal");
    for entry in std::fs::read_dir(&wal).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    wait_new_master(&c, &old_master);
    c.start_keeper(&old_master);
    assert_fell_back(&c, &old_master, "checkpoint record");
}

#[test]
fn a_master_without_wal_log_hints_falls_back_to_pg_basebackup() {
    // usePgrewind turned on while the instances run: wal_log_hints needs a restart to take
    // effect, and without it (or data checksums) pg_rewind refuses the old master.
    let mut c = ClusterBuilder::new("rewind-fallback")
        .keepers(2)
        .sentinels(1)
        .allow_errors(&["pg_rewind failed", "wal_log_hints"])
        .start();
    let old_master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.other_keeper(&old_master);
    c.replicate_first_row(&standby, "replicated");
    let checksums = c.psql_keeper(&old_master, "show data_checksums").unwrap();
    if checksums[0][0].as_deref() == Some("on") {
        // initdb turns them on from PostgreSQL 18: pg_rewind needs no wal_log_hints then.
        eprintln!("data checksums are on: pg_rewind works without wal_log_hints; nothing to test");
        return;
    }
    c.stolonctl_ok(&["update", "--patch", r#"{"usePgrewind": true}"#]);
    // A clean stop: pg_rewind then reads the control file as the old master left it.
    c.signal_keeper_process(&old_master, Signal::SIGTERM);
    assert!(
        c.wait_keeper_exit(&old_master, Duration::from_secs(60))
            .is_some(),
        "the keeper did not stop on SIGTERM"
    );
    wait_new_master(&c, &old_master);
    c.start_keeper(&old_master);
    assert_fell_back(&c, &old_master, "wal_log_hints");
}
