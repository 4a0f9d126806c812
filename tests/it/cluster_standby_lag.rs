//! (f) A standby lagging beyond maxStandbyLag is never promoted: with the master and the
//! up-to-date standby both dead, the lagging one stays a standby; when the up-to-date standby's
//! keeper comes back, that one is elected.

use crate::support;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::time::Duration;
use support::{Cluster, ClusterBuilder, procs, stays_true, wait_for, wait_until};

const MAX_STANDBY_LAG: u64 = 1024 * 1024;

fn xlogpos(cd: &Value, keeper: &str) -> Option<u64> {
    let db = Cluster::keeper_db(cd, keeper)?;
    cd["dbs"][&db]["status"]["xLogPos"].as_u64()
}

#[test]
fn lagging_standby_is_not_promoted() {
    let mut c = ClusterBuilder::new("lag")
        .allow_errors(&["no eligible master"])
        .keepers(3)
        .sentinels(1)
        .spec(json!({"maxStandbyLag": MAX_STANDBY_LAG}))
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    wait_until(Duration::from_secs(120), "2 streaming standbys", || {
        c.streaming_standbys(&master) == Some(2)
    });
    c.wait_dbs_converged(3, Duration::from_secs(60));
    let standbys: Vec<String> = c
        .keepers
        .keys()
        .filter(|k| **k != master)
        .cloned()
        .collect();
    let (lagging, up_to_date) = (standbys[0].clone(), standbys[1].clone());

    // Freeze the lagging standby's WAL receiver: it neither receives nor replays WAL any more,
    // yet its postgres answers its keeper, so its db stays healthy and only the lag rule can
    // keep it from being elected. (Pausing replay alone would not do: IDENTIFY_SYSTEM on a
    // standby reports the received position.)
    let walreceiver: i32 = wait_for(Duration::from_secs(30), "the walreceiver pid", || {
        let rows = c
            .psql_keeper(&lagging, "select pid from pg_stat_wal_receiver")
            .ok()?;
        rows.first()?.first()?.as_deref()?.parse().ok()
    });
    procs::signal_pid(walreceiver, Signal::SIGSTOP);
    // Resumed on every exit path: a stopped process outlives the cluster's teardown (it cannot
    // notice its postmaster is gone), so a failing test would leak it.
    let resume = Resume(walreceiver);

    c.psql_via_proxy("create table big (id int primary key, pad text)")
        .unwrap();
    c.psql_via_proxy("insert into big select g, repeat('x', 1000) from generate_series(1, 4000) g")
        .unwrap();
    // The up-to-date standby must hold the whole transaction, not only be within the lag.
    c.wait_keeper_rows(
        &up_to_date,
        "select count(*) from big",
        &["4000"],
        Duration::from_secs(60),
    );
    wait_until(
        Duration::from_secs(60),
        "the cluster data to show the lagging standby beyond maxStandbyLag, the other within it, both healthy",
        || {
            let Some(cd) = c.try_clusterdata() else {
                return false;
            };
            let (Some(m), Some(l), Some(u)) = (
                xlogpos(&cd, &master),
                xlogpos(&cd, &lagging),
                xlogpos(&cd, &up_to_date),
            ) else {
                return false;
            };
            let healthy = |k: &str| {
                Cluster::keeper_db(&cd, k)
                    .is_some_and(|db| cd["dbs"][&db]["status"]["healthy"] == true)
            };
            m.saturating_sub(l) > MAX_STANDBY_LAG
                && m.saturating_sub(u) < MAX_STANDBY_LAG
                && healthy(&lagging)
                && healthy(&up_to_date)
        },
    );

    c.kill_keeper(&master);
    c.kill_keeper(&up_to_date);
    // failInterval (4s) + a few sentinel rounds: long enough for a wrong election to show.
    stays_true(
        Duration::from_secs(12),
        "the lagging standby is not elected master",
        || c.master_keeper().as_deref() != Some(lagging.as_str()),
    );
    // Back first: the up-to-date standby must win the election. Only then is the lagging
    // standby's walreceiver resumed: its socket may still buffer WAL the old master sent, which
    // would let it catch up and be elected, fairly, before the up-to-date keeper is back.
    c.start_keeper(&up_to_date);
    wait_for(
        Duration::from_secs(90),
        "the up-to-date standby to be elected and served through the proxy",
        || {
            let m = c.master_keeper()?;
            (m == up_to_date && c.proxy_backend().ok()? == m).then_some(())
        },
    );
    // Resumed, the walreceiver lets the startup process replace it when the keeper reloads a
    // new primary_conninfo (the sentinel repointed this standby); a stopped walreceiver blocks
    // that, and would block a shutdown until the keeper's stop escalates.
    drop(resume);
    // Its keeper restarts its postgres on PostgreSQL < 13 to follow the new master: wait for it
    // to answer instead of expecting it to be up at this very moment.
    let in_recovery: String = wait_for(
        Duration::from_secs(30),
        "the lagging standby's postgres to answer",
        || {
            let rows = c.psql_keeper(&lagging, "select pg_is_in_recovery()").ok()?;
            rows.first()?.first()?.clone()
        },
    );
    assert_eq!(in_recovery, "t", "the lagging standby was promoted");
    let rows = c.psql_via_proxy("select count(*) from big").unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("4000"));
    assert_ne!(c.master_keeper().as_deref(), Some(lagging.as_str()));
}

/// Sends SIGCONT to a stopped process when dropped.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        // It may be gone already (the keeper's stop escalates to SIGKILL): nothing to resume.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGCONT);
    }
}
