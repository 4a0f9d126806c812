//! (h) The whole cluster works against an etcd that requires TLS client certificates.

use crate::support;

use std::time::Duration;
use support::{ClusterBuilder, wait_until};

#[test]
fn cluster_runs_on_etcd_with_tls_client_auth() {
    let c = ClusterBuilder::new("tls")
        .keepers(2)
        .sentinels(1)
        .etcd_tls()
        .start();
    assert!(c.etcd.endpoint().starts_with("https://"));
    let master = c.wait_master_serving(Duration::from_secs(150));
    wait_until(Duration::from_secs(120), "1 streaming standby", || {
        c.streaming_standbys(&master) == Some(1)
    });
    c.psql_via_proxy("create table t (v text)").unwrap();
    c.psql_via_proxy("insert into t values ('over tls')")
        .unwrap();
    let standby = c.keepers.keys().find(|k| **k != master).unwrap().clone();
    c.wait_keeper_rows(
        &standby,
        "select v from t",
        &["over tls"],
        Duration::from_secs(30),
    );

    // The keys really are in the TLS etcd under the upstream layout.
    let out = c
        .etcd
        .etcdctl(&["get", "--prefix", "--keys-only", "stolon/cluster/tls/"]);
    let keys = String::from_utf8_lossy(&out.stdout);
    for k in [
        "stolon/cluster/tls/clusterdata",
        "stolon/cluster/tls/keepers/info/keeper0",
        "stolon/cluster/tls/keepers/info/keeper1",
    ] {
        assert!(
            keys.lines().any(|l| l == k),
            "{k} missing from etcd; keys:\n{keys}"
        );
    }
    c.stolonctl_ok(&["status"]);
}
