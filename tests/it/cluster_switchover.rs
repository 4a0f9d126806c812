//! (c) `stolonctl failkeeper <master>` switches the master over to the standby, and a session
//! opened through the proxy before the switch is closed by the proxy.

use crate::support;

use std::time::Duration;
use support::{Cluster, ClusterBuilder, wait_for, wait_until};

#[test]
fn failkeeper_switches_over_and_cuts_old_sessions() {
    let c = ClusterBuilder::new("switchover")
        .keepers(2)
        .sentinels(1)
        .start();
    let old_master = c.wait_master_serving(Duration::from_secs(150));
    wait_until(Duration::from_secs(120), "1 streaming standby", || {
        c.streaming_standbys(&old_master) == Some(1)
    });
    c.psql_via_proxy("create table t (id int primary key, v text)")
        .unwrap();
    c.psql_via_proxy("insert into t values (1, 'before switchover')")
        .unwrap();
    let standby = c
        .keepers
        .keys()
        .find(|k| **k != old_master)
        .unwrap()
        .clone();
    c.wait_keeper_rows(
        &standby,
        "select v from t",
        &["before switchover"],
        Duration::from_secs(30),
    );

    // failkeeper marks the keeper failed for one sentinel check only: the standby must be
    // electable at that moment.
    c.wait_dbs_converged(2, Duration::from_secs(60));

    let old_session = c.connect_proxy().unwrap();
    let port = old_session.query("select inet_server_port()").unwrap();
    assert_eq!(
        port[0][0].as_deref(),
        Some(c.keepers[&old_master].pg_port.to_string().as_str()),
        "the session must start on the old master"
    );

    c.stolonctl_ok(&["failkeeper", &old_master]);
    let new_master = wait_for(
        Duration::from_secs(60),
        "the standby to become master and the proxy to route writes to it",
        || {
            let m = Cluster::master_keeper_in(&c.try_clusterdata()?)?;
            if m == old_master || c.proxy_backend().ok()? != m {
                return None;
            }
            let ro = c.psql_via_proxy("select pg_is_in_recovery()").ok()?;
            (ro[0][0].as_deref() == Some("f")).then_some(m)
        },
    );
    assert_eq!(new_master, standby);

    // The proxy must have closed it before routing anyone to the new master.
    let err = old_session.query("select 1").expect_err(
        "a session opened before the switchover still works: the proxy did not close it",
    );
    eprintln!("old session closed as expected: {err}");

    let rows = c.psql_via_proxy("select v from t").unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("before switchover"));
    c.psql_via_proxy("insert into t values (2, 'after switchover')")
        .unwrap();
}
