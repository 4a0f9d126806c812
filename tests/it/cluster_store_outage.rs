//! (d) When etcd goes away the proxy fails closed within proxyTimeout: it closes its sessions and
//! stops listening. When etcd comes back it serves again.

use crate::support;

use std::time::{Duration, Instant};
use support::{ClusterBuilder, connection_refused, wait_until};

#[test]
fn proxy_fails_closed_without_etcd_and_recovers() {
    let proxy_timeout = Duration::from_secs(4);
    let mut c = ClusterBuilder::new("outage")
        .allow_errors(&[
            "FENCING",
            "no successful store check within proxyTimeout",
            "cannot read clusterdata",
            // Which of the sentinel's reads meets the dead etcd first is a matter of timing.
            "cannot read keeper/proxy infos",
            "postgres exited unexpectedly",
        ])
        .keepers(1)
        .sentinels(1)
        .spec(serde_json::json!({"proxyCheckInterval": "1s", "proxyTimeout": "4s"}))
        .start();
    c.wait_master_serving(Duration::from_secs(120));
    let session = c.connect_proxy().unwrap();
    session.query("select 1").unwrap();

    c.etcd.stop();
    let stopped_at = Instant::now();
    let mut session_closed_after = None;
    let mut refused_after = None;
    // proxyTimeout counts from the last successful check, at most one check interval before the
    // stop; the rest is slack for a loaded machine.
    wait_until(
        proxy_timeout + Duration::from_secs(4),
        "the proxy to close its session and stop listening after etcd stopped",
        || {
            if session_closed_after.is_none() && session.query("select 1").is_err() {
                session_closed_after = Some(stopped_at.elapsed());
            }
            if refused_after.is_none() && connection_refused(c.proxy_port) {
                refused_after = Some(stopped_at.elapsed());
            }
            session_closed_after.is_some() && refused_after.is_some()
        },
    );
    eprintln!(
        "without etcd: session closed after {session_closed_after:?}, listener closed after {refused_after:?}"
    );

    c.etcd.start_again();
    wait_until(
        Duration::from_secs(60),
        "the proxy to serve the master again after etcd returned",
        || c.psql_via_proxy("select 1").is_ok(),
    );
}
