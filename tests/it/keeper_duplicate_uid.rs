//! Two keepers with one uid: the second one (same `--uid`, its own data dir and port, as on a
//! second host) refuses to run with a one-line error naming the uid and the fix, and the first
//! one keeps its db. A keeper that merely restarts after a crash (its old info still in the
//! store, unchanged) goes on.

use crate::support;

use std::time::Duration;
use support::{Cluster, ClusterBuilder, stays_true, wait_until};

#[test]
fn second_keeper_with_the_same_uid_refuses_to_run_and_a_restarted_one_goes_on() {
    let mut c = ClusterBuilder::new("dupuid")
        .keepers(1)
        .sentinels(1)
        .proxy(false)
        .start();
    c.wait_dbs_converged(1, Duration::from_secs(150));
    let cd = c.clusterdata();
    let db = Cluster::keeper_db(&cd, "keeper0").expect("keeper0's db");
    let pid = c.keepers["keeper0"].postmaster_pid();

    c.add_keeper_with_uid("impostor", "keeper0", &[]);
    let status = c
        .wait_keeper_exit("impostor", Duration::from_secs(30))
        .expect("the second keeper with uid keeper0 must exit");
    assert!(!status.success(), "it must fail: {status}");
    let log = c.keeper_log("impostor");
    let line = log
        .lines()
        .find(|l| l.contains("error:"))
        .unwrap_or_else(|| panic!("no error line in the impostor's output:\n{log}"));
    assert!(
        line.contains(r#"keeper uid "keeper0" is in use by another running keeper"#)
            && line.contains("--uid")
            && line.contains("--data-dir"),
        "{line}"
    );
    assert!(
        !c.keepers["impostor"]
            .data_dir
            .join("postgres")
            .join("PG_VERSION")
            .exists(),
        "the impostor must not have touched PostgreSQL"
    );
    // The owner was not disturbed.
    stays_true(
        Duration::from_secs(3),
        "keeper0 keeps its db running",
        || {
            c.keepers["keeper0"].postmaster_pid() == pid
                && c.try_clusterdata()
                    .is_some_and(|cd| cd["dbs"][&db]["status"]["healthy"] == true)
        },
    );

    // A crashed keeper's info stays in the store (lease TTL) unchanged: its restart goes on.
    c.kill_keeper("keeper0");
    c.start_keeper("keeper0");
    wait_until(
        Duration::from_secs(60),
        "the restarted keeper0 to serve its db again",
        || {
            c.psql_keeper("keeper0", "select 1").is_ok()
                && c.try_clusterdata().is_some_and(|cd| {
                    cd["dbs"][&db]["status"]["healthy"] == true
                        && cd["keepers"]["keeper0"]["status"]["healthy"] == true
                })
        },
    );
    assert!(c.keeper_running("keeper0"));
    assert!(
        !c.keeper_log("keeper0")
            .contains("is in use by another running keeper"),
        "a restarted keeper must not mistake its own old info for another keeper's"
    );
}
