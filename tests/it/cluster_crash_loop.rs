//! A master whose PostgreSQL keeps crashing fails over. The master's postmaster (and its
//! backends) is SIGKILLed again and again while its keeper stays up: the first crashes are
//! restarted in place, and once they make a crash loop (3 within 5 minutes, see
//! src/keeper/setbacks.rs) the keeper leaves PostgreSQL stopped, reports the db unhealthy and
//! the sentinel promotes the standby after failInterval.

use crate::support;

use std::time::Duration;
use support::{Cluster, ClusterBuilder, procs, wait_for, wait_until};

#[test]
fn master_whose_postgres_keeps_crashing_fails_over() {
    // failInterval well above the few seconds a restart takes: the restarts alone must not
    // fail over, the crash loop must.
    let c = ClusterBuilder::new("crashloop")
        .allow_errors(&[
            "postgres exited unexpectedly",
            "action failed; retrying on the next iteration",
            "PostgreSQL keeps exiting unexpectedly",
            // A standby copying from the crashing master when it goes down starts over.
            "db failed to initialize or resync",
        ])
        .keepers(2)
        .sentinels(1)
        .spec(serde_json::json!({"failInterval": "10s"}))
        .start();
    let old_master = c.wait_master_serving(Duration::from_secs(150));
    c.wait_dbs_converged(2, Duration::from_secs(120));
    c.psql_via_proxy("create table t (v text)").unwrap();
    c.psql_via_proxy("insert into t values ('before crashes')")
        .unwrap();
    let pgdata = c.keepers[&old_master].data_dir.join("postgres");
    // The spec's default maxSlotWalKeepSize bounds what a dead standby's slot may keep.
    let keep = c
        .psql_keeper(&old_master, "show max_slot_wal_keep_size")
        .unwrap();
    assert_eq!(keep[0][0].as_deref(), Some("10GB"));

    let mut pid = c.keepers[&old_master]
        .postmaster_pid()
        .expect("the master's postmaster");
    for crash in 1..=2 {
        procs::kill_postmaster(&pgdata, Some(pid));
        pid = wait_for(
            Duration::from_secs(30),
            &format!("the keeper to restart its master's PostgreSQL after crash {crash}"),
            || {
                let p = c.keepers[&old_master].postmaster_pid()?;
                (p != pid && c.psql_keeper(&old_master, "select 1").is_ok()).then_some(p)
            },
        );
        assert_eq!(
            c.master_keeper().as_deref(),
            Some(old_master.as_str()),
            "a restart in place must not fail over"
        );
    }

    // The third crash makes a loop: no restart, failover instead.
    procs::kill_postmaster(&pgdata, Some(pid));
    let mut restarted = false;
    let new_master = wait_for(
        Duration::from_secs(60),
        "the standby to be promoted and the proxy to route writes to it",
        || {
            restarted |= c.keepers[&old_master].postmaster_pid().is_some();
            let cd = c.try_clusterdata()?;
            let m = Cluster::master_keeper_in(&cd)?;
            if m == old_master || c.proxy_backend().ok()? != m {
                return None;
            }
            let ro = c.psql_via_proxy("select pg_is_in_recovery()").ok()?;
            (ro[0][0].as_deref() == Some("f")).then_some(m)
        },
    );
    assert!(
        !restarted,
        "the crash-looping master's PostgreSQL was started again before the failover"
    );
    assert_ne!(new_master, old_master);
    assert!(
        c.keeper_log(&old_master)
            .contains("PostgreSQL keeps exiting unexpectedly"),
        "the keeper must say why it left PostgreSQL stopped"
    );
    let rows = c.psql_via_proxy("select v from t").unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("before crashes"));
    wait_until(
        Duration::from_secs(30),
        "a write through the proxy on the new master",
        || c.psql_via_proxy("insert into t values ('after')").is_ok(),
    );
    // The old master's keeper keeps running (it only holds PostgreSQL back) and its old db is
    // gone: it cannot come back as a second master.
    assert!(c.keeper_running(&old_master));
    let cd = c.clusterdata();
    assert_ne!(
        Cluster::master_keeper_in(&cd).as_deref(),
        Some(old_master.as_str())
    );
}
