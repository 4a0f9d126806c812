//! Maintenance mode and election priority on real processes: a paused cluster keeps its dead
//! master until `stolonctl resume`; a failover elects the standby of the highest `--priority`,
//! and a keeper of priority 0 is never elected.

use crate::support;

use std::time::Duration;
use support::{Cluster, ClusterBuilder, wait_for, wait_until};

fn master_keeper(c: &Cluster) -> Option<String> {
    Cluster::master_keeper_in(&c.try_clusterdata()?)
}

#[test]
fn a_paused_cluster_keeps_its_dead_master_until_resumed() {
    let mut c = ClusterBuilder::new("paused")
        .keepers(2)
        .sentinels(1)
        .start();
    c.allow_error("postgres exited unexpectedly");
    let master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.other_keeper(&master);
    c.replicate_first_row(&standby, "before");
    c.wait_dbs_converged(2, Duration::from_secs(60));
    let out = c.stolonctl_ok(&["pause"]);
    assert!(out.contains("cluster paused"), "{out}");
    assert!(c.stolonctl_ok(&["status"]).contains("Paused: yes"));

    c.kill_keeper(&master);
    // The sentinel sees the master fail and says it does not fail over.
    wait_until(
        Duration::from_secs(60),
        "the sentinel to log that the failed master is kept while paused",
        || c.sentinel_log(0).contains("the cluster is paused"),
    );
    let cd = c.clusterdata();
    assert_eq!(
        Cluster::master_keeper_in(&cd).as_deref(),
        Some(master.as_str())
    );
    assert_ne!(cd["keepers"][&master]["status"]["healthy"], true);

    c.stolonctl_ok(&["resume"]);
    let new = wait_for(Duration::from_secs(60), "a failover once resumed", || {
        master_keeper(&c).filter(|m| *m != master)
    });
    assert_eq!(new, standby);
    wait_for(Duration::from_secs(60), "writes through the proxy", || {
        c.psql_via_proxy("insert into t values (2, 'after')").ok()
    });
}

#[test]
fn failover_elects_the_highest_priority_and_never_priority_zero() {
    let mut c = ClusterBuilder::new("priority")
        .keepers(1)
        .sentinels(1)
        .start();
    c.allow_error("postgres exited unexpectedly");
    c.allow_error("no eligible master");
    let master = c.wait_master_serving(Duration::from_secs(150));
    c.add_keeper("never", &["--priority", "0"]);
    c.add_keeper("preferred", &["--priority", "2"]);
    c.wait_dbs_converged(3, Duration::from_secs(150));
    let status = c.stolonctl_ok(&["status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let priority = |uid: &str| {
        status["keepers"]
            .as_array()
            .and_then(|ks| ks.iter().find(|k| k["uid"] == uid))
            .map(|k| k["priority"].clone())
    };
    assert_eq!(priority("never"), Some(0.into()));
    assert_eq!(priority("preferred"), Some(2.into()));

    c.kill_keeper(&master);
    let new = wait_for(Duration::from_secs(60), "a new master", || {
        master_keeper(&c).filter(|m| *m != master)
    });
    assert_eq!(new, "preferred");

    // Only the priority-0 standby is left: no election.
    c.kill_keeper("preferred");
    wait_until(
        Duration::from_secs(60),
        "the sentinel to find no eligible master",
        || c.sentinel_log(0).contains("no eligible master"),
    );
    assert_eq!(master_keeper(&c).as_deref(), Some("preferred"));
}
