//! The proxy's read-only listener on a real two-keeper cluster: a client lands on the standby,
//! is cut by the proxy when the standby stops qualifying (its keeper frozen, PostgreSQL still
//! up) and when the standby is promoted by a failover; with no standby left it is refused, or
//! with `--read-only-fallback-master` it lands on the master.

use crate::support;

use nix::sys::signal::Signal;
use std::time::Duration;
use support::{Cluster, ClusterBuilder, Session, wait_for, wait_until};

/// A fresh session on the read-only port and where it landed: (in recovery, server port).
fn read_only_session(c: &Cluster) -> Option<(Session, bool, u16)> {
    let port = c.read_only_port.expect("a read-only proxy");
    let s = c.connect(port).ok()?;
    let rows = s
        .query("select pg_is_in_recovery(), inet_server_port()")
        .ok()?;
    let in_recovery = rows[0][0].as_deref()? == "t";
    let server_port = rows[0][1].as_deref()?.parse().ok()?;
    Some((s, in_recovery, server_port))
}

/// Waits for a read-only session on `keeper`'s PostgreSQL, in recovery (a standby) or not.
fn wait_read_only_on(c: &Cluster, keeper: &str, standby: bool) -> Session {
    let port = c.keepers[keeper].pg_port;
    wait_for(
        Duration::from_secs(60),
        &format!("a read-only session on {keeper} (in recovery: {standby})"),
        || {
            let (s, in_recovery, server_port) = read_only_session(c)?;
            (in_recovery == standby && server_port == port).then_some(s)
        },
    )
}

/// The cluster with a healthy standby; returns (master, standby).
fn start(c: &Cluster) -> (String, String) {
    let master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.other_keeper(&master);
    c.wait_healthy_standby(&standby, None);
    (master, standby)
}

#[test]
fn read_only_clients_land_on_the_standby_and_are_cut_when_it_stops_qualifying_or_is_promoted() {
    let mut c = ClusterBuilder::new("roproxy")
        .keepers(2)
        .sentinels(1)
        .read_only_proxy()
        .start();
    let (master, standby) = start(&c);
    let ro_port = c.read_only_port.unwrap();
    let session = wait_read_only_on(&c, &standby, true);

    // The standby's keeper freezes: its PostgreSQL keeps serving, but the sentinel marks the
    // keeper failed and the proxy cuts the session.
    c.signal_keeper_process(&standby, Signal::SIGSTOP);
    wait_until(Duration::from_secs(60), "the read-only session cut", || {
        session.query("select 1").is_err()
    });
    assert!(
        c.psql_keeper(&standby, "select 1").is_ok(),
        "the standby's PostgreSQL still answers: the proxy is what cut the session"
    );
    // No standby qualifies and no fallback: read-only clients are refused; writers are not.
    wait_until(Duration::from_secs(30), "read-only clients refused", || {
        c.connect(ro_port).is_err()
    });
    assert_eq!(c.proxy_backend().unwrap(), master);

    c.signal_keeper_process(&standby, Signal::SIGCONT);
    c.wait_healthy_standby(&standby, None);
    let on_standby = wait_read_only_on(&c, &standby, true);

    // Failover to the standby: the read-only session opened on it is cut once it is promoted,
    // and with no standby left read-only clients are refused.
    c.kill_keeper(&master);
    wait_until(
        Duration::from_secs(60),
        "the standby elected and the proxy routing writes to it",
        || {
            c.master_keeper().as_deref() == Some(standby.as_str())
                && c.proxy_backend().ok().as_deref() == Some(standby.as_str())
        },
    );
    assert!(
        on_standby.query("select 1").is_err(),
        "a read-only session survived its standby's promotion"
    );
    assert!(
        c.connect(ro_port).is_err(),
        "a read-only client reached the new master without --read-only-fallback-master"
    );
}

#[test]
fn with_the_fallback_read_only_clients_land_on_the_master_while_no_standby_qualifies() {
    let c = ClusterBuilder::new("rofallback")
        .keepers(2)
        .sentinels(1)
        .read_only_proxy()
        .proxy_args(&["--read-only-fallback-master"])
        .start();
    let (master, standby) = start(&c);
    let on_standby = wait_read_only_on(&c, &standby, true);

    c.signal_keeper_process(&standby, Signal::SIGSTOP);
    let on_master = wait_read_only_on(&c, &master, false);
    assert!(
        on_standby.query("select 1").is_err(),
        "the session to the failed standby survived"
    );

    // The standby qualifies again: read-only clients go back to it.
    c.signal_keeper_process(&standby, Signal::SIGCONT);
    c.wait_healthy_standby(&standby, None);
    wait_read_only_on(&c, &standby, true);
    drop(on_master);
}
