//! A standby whose pg_basebackup keeps failing (here: a wrong replication password) retries
//! with a growing delay — sleepInterval, then twice as long each time (src/keeper/setbacks.rs)
//! — instead of copying from the master every sleepInterval.

use crate::support;

use std::time::Duration;
use support::procs::RunAs;
use support::{ClusterBuilder, wait_for, write_secret};

#[test]
fn failing_resync_backs_off() {
    let mut c = ClusterBuilder::new("resyncbackoff")
        .allow_errors(&["action=\"resync\"", "db failed to initialize or resync"])
        .keepers(1)
        .sentinels(1)
        .proxy(false)
        .start();
    c.wait_dbs_converged(1, Duration::from_secs(150));
    let wrong = c.base.join("secrets").join("wrong-repl-password");
    write_secret(&wrong, "not-the-password", RunAs::keeper_user());
    let wrong = wrong.display().to_string();
    // The later flag wins: this keeper authenticates for replication with a wrong password.
    c.add_keeper("keeper1", &["--pg-repl-passwordfile", &wrong]);

    // (when, announced wait) of each failed resync.
    let failures = wait_for(
        Duration::from_secs(60),
        "three failed resyncs of keeper1",
        || {
            let failures: Vec<(chrono::DateTime<chrono::FixedOffset>, String)> = c
                .keeper_log("keeper1")
                .lines()
                .filter(|l| l.contains("resync failed; "))
                .filter_map(|l| {
                    let at = chrono::DateTime::parse_from_rfc3339(l.split_whitespace().next()?);
                    let wait = l.split(" waits ").nth(1)?.split_whitespace().next()?;
                    Some((at.ok()?, wait.to_string()))
                })
                .collect();
            (failures.len() >= 3).then_some(failures)
        },
    );
    // sleepInterval is 1s in the test spec.
    let waits: Vec<&str> = failures.iter().map(|(_, w)| w.as_str()).collect();
    assert_eq!(&waits[..3], ["1s", "2s", "4s"], "{failures:?}");
    // And the copies really were that far apart (each also takes a little time itself).
    for (i, want) in [(1, 1000), (2, 2000)] {
        let gap = (failures[i].0 - failures[i - 1].0).num_milliseconds();
        assert!(
            gap >= want,
            "resync {} came {gap} ms after the previous one",
            i + 1
        );
    }
}
