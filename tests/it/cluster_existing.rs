//! initMode existing on a live cluster: `stolonctl init` again, adopting the master's data
//! directory as it is (its rows stay), with `mergePgParameters` taking the parameters it runs
//! with into the new spec, or not (PostgreSQL then goes back to its defaults).

use crate::support;

use serde_json::{Value, json};
use std::time::Duration;
use support::{Cluster, ClusterBuilder, default_spec, wait_for};

/// `stolonctl init -y` with the tests' fast timings and `patch`.
fn reinit(c: &Cluster, patch: Value) {
    let mut spec = default_spec();
    for (k, v) in patch.as_object().unwrap() {
        spec[k] = v.clone();
    }
    c.stolonctl_ok(&["init", "-y", &spec.to_string()]);
}

/// Waits for the re-initialised cluster to serve writes from `master`; returns its spec.
fn wait_reinitialised(c: &Cluster, master: &str, cluster_uid: &str) -> Value {
    wait_for(
        Duration::from_secs(150),
        "the cluster re-initialised on the same master, serving writes",
        || {
            let cd = c.try_clusterdata()?;
            (cd["cluster"]["uid"] != cluster_uid
                && cd["cluster"]["status"]["phase"] == "normal"
                && Cluster::master_keeper_in(&cd)? == master
                && c.psql_via_proxy("insert into t values (default)").is_ok())
            .then(|| cd["cluster"]["spec"].clone())
        },
    )
}

#[test]
fn existing_keeps_the_data_and_merges_the_parameters_or_not() {
    let c = ClusterBuilder::new("existing")
        .keepers(2)
        .sentinels(1)
        .spec(json!({"pgParameters": {"work_mem": "5MB"}}))
        // A re-init restarts the master: a standby copying from it just then starts over.
        .allow_errors(&["pg_basebackup failed", "db failed to initialize or resync"])
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    c.psql_via_proxy("create table t (id serial primary key); insert into t default values")
        .unwrap();
    let uid = c.clusterdata()["cluster"]["uid"]
        .as_str()
        .unwrap()
        .to_string();

    reinit(
        &c,
        json!({
            "initMode": "existing",
            "existingConfig": {"keeperUID": master},
            "mergePgParameters": true,
        }),
    );
    let spec = wait_reinitialised(&c, &master, &uid);
    assert_eq!(
        spec["pgParameters"]["work_mem"], "5MB",
        "the parameters the master ran with are merged into the spec: {spec}"
    );
    let rows = c.psql_via_proxy("select count(*) from t").unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("2"), "the data is kept");
    let shown = c.psql_via_proxy("show work_mem").unwrap();
    assert_eq!(shown[0][0].as_deref(), Some("5MB"));

    let uid = c.clusterdata()["cluster"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    reinit(
        &c,
        json!({
            "initMode": "existing",
            "existingConfig": {"keeperUID": master},
            "mergePgParameters": false,
        }),
    );
    let spec = wait_reinitialised(&c, &master, &uid);
    assert!(
        spec["pgParameters"].get("work_mem").is_none(),
        "without mergePgParameters the spec stays as given: {spec}"
    );
    let rows = c.psql_via_proxy("select count(*) from t").unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("3"), "the data is kept");
    wait_for(
        Duration::from_secs(60),
        "work_mem back to PostgreSQL's default",
        || {
            let shown = c.psql_via_proxy("show work_mem").ok()?;
            (shown[0][0].as_deref() == Some("4MB")).then_some(())
        },
    );
}
