//! The keeper's health checks for load balancers (`--api-listen-address`, and the metrics
//! listener) on a real two-keeper cluster: /primary answers 200 on the master only, /replica
//! on the standby only, /read-only and /health on both; the answers follow a failover and the
//! old master's return as a standby; and cut off from the store, the master stops answering
//! 200 on /primary while the standby stays a replica.

use crate::support;

use serde_json::Value;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use support::{Cluster, ClusterBuilder, free_ports, stays_true, wait_for, wait_until};

/// `method path` on 127.0.0.1:`port`: the status and the body; None when nothing answers.
fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    conn.write_all(format!("{method} {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn status(port: u16, path: &str) -> Option<u16> {
    http(port, "GET", path).map(|(s, _)| s)
}

const CHECKS: [&str; 5] = [
    "/health",
    "/primary",
    "/replica",
    "/read-only",
    "/replica?lag=1TB",
];

/// The status of every check in [`CHECKS`] on `port`.
fn statuses(port: u16) -> Vec<Option<u16>> {
    CHECKS.iter().map(|p| status(port, p)).collect()
}

const AS_MASTER: [Option<u16>; 5] = [Some(200), Some(200), Some(503), Some(200), Some(503)];
const AS_STANDBY: [Option<u16>; 5] = [Some(200), Some(503), Some(200), Some(200), Some(200)];

/// Waits until `port` answers every check as `want`; shows the last answers otherwise.
fn wait_checks(port: u16, who: &str, want: [Option<u16>; 5], timeout: Duration) {
    let mut last = Vec::new();
    let what = format!("{who}'s health checks {CHECKS:?} to answer {want:?}");
    let start = Instant::now();
    while start.elapsed() < timeout {
        last = statuses(port);
        if last == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}; last: {last:?}");
}

/// The JSON body of a 200 to `GET path` (waiting for one: a loaded machine may make the
/// keeper's last look at PostgreSQL too old for a moment).
fn ok_body(port: u16, path: &str) -> Value {
    wait_for(Duration::from_secs(10), &format!("200 on {path}"), || {
        let (status, body) = http(port, "GET", path)?;
        (status == 200).then(|| serde_json::from_str(&body).unwrap_or(Value::Null))
    })
}

/// Waits until `method path` on `port` answers `want` (status, body).
fn wait_answer(port: u16, method: &str, path: &str, want: (u16, &str)) {
    let what = format!("{method} {path} to answer {want:?}");
    wait_until(Duration::from_secs(10), &what, || {
        http(port, method, path).is_some_and(|(s, b)| (s, b.as_str()) == want)
    });
}

#[test]
fn health_checks_follow_the_roles_through_a_failover_a_rejoin_and_a_store_outage() {
    let mut c = ClusterBuilder::new("health")
        .keepers(0)
        .sentinels(0)
        .allow_errors(&[
            // The store outage at the end: the master fences itself, the rest cannot read.
            "FENCING",
            "cannot read clusterdata",
            "cannot write clusterdata",
            "cannot read keeper/proxy infos",
            "no successful store check within proxyTimeout",
            "postgres exited unexpectedly",
        ])
        .start();
    let ports = free_ports(3);
    // keeper0 serves the checks on both listeners, keeper1 on the API listener only.
    let (metrics0, api0, api1) = (ports[0], ports[1], ports[2]);
    let listen = |p: u16| format!("127.0.0.1:{p}");
    let (m0, a0, a1) = (listen(metrics0), listen(api0), listen(api1));
    c.add_keeper(
        "keeper0",
        &["--metrics-listen-address", &m0, "--api-listen-address", &a0],
    );
    c.add_keeper("keeper1", &["--api-listen-address", &a1]);
    c.start_sentinel(0);

    let master = c.wait_master_serving(Duration::from_secs(120));
    let standby = c.other_keeper(&master);
    c.wait_healthy_standby(&standby, None);
    let api_of = |uid: &str| if uid == "keeper0" { api0 } else { api1 };
    wait_checks(api_of(&master), &master, AS_MASTER, Duration::from_secs(30));
    wait_checks(
        api_of(&standby),
        &standby,
        AS_STANDBY,
        Duration::from_secs(30),
    );

    // The body names the keeper, its db and its role.
    let cd = c.clusterdata();
    let primary = ok_body(api_of(&master), "/primary");
    assert_eq!(primary["role"], "master", "{primary}");
    assert_eq!(primary["state"], "running", "{primary}");
    assert_eq!(primary["in_recovery"], false, "{primary}");
    assert_eq!(primary["keeper_uid"], master.as_str(), "{primary}");
    assert_eq!(primary["cluster"], "health", "{primary}");
    assert_eq!(
        primary["db_uid"].as_str(),
        Cluster::keeper_db(&cd, &master).as_deref(),
        "{primary}"
    );
    assert!(primary["timeline"].as_u64().is_some(), "{primary}");
    assert!(primary.get("lag").is_none(), "{primary}");
    let replica = ok_body(api_of(&standby), "/replica");
    assert_eq!(replica["role"], "standby", "{replica}");
    assert_eq!(replica["in_recovery"], true, "{replica}");
    assert!(replica["lag"].as_u64().is_some(), "{replica}");

    // HAProxy's default check is OPTIONS; HEAD is a GET without the body.
    for method in ["OPTIONS", "HEAD"] {
        wait_answer(api_of(&master), method, "/primary", (200, ""));
    }
    assert_eq!(status(api_of(&standby), "/replica?lag=plenty"), Some(400));
    // The metrics listener serves the checks too; the API listener no metrics.
    wait_answer(metrics0, "OPTIONS", "/health", (200, ""));
    assert_eq!(status(metrics0, "/metrics"), Some(200));
    assert_eq!(status(api0, "/metrics"), Some(404));
    assert_eq!(status(api0, "/nothing"), Some(404));

    // The master's keeper dies: the standby is elected and its checks follow.
    c.kill_keeper(&master);
    wait_until(
        Duration::from_secs(60),
        "the standby elected master",
        || c.master_keeper().is_some_and(|m| m == standby),
    );
    wait_checks(
        api_of(&standby),
        &standby,
        AS_MASTER,
        Duration::from_secs(60),
    );
    assert_eq!(status(api_of(&master), "/primary"), None, "a dead keeper");

    // The old master's keeper comes back: it rejoins as a standby, and never once claims to
    // be the primary meanwhile.
    let old_db = Cluster::keeper_db(&cd, &master);
    c.start_keeper(&master);
    let rejoin = Instant::now();
    let mut last = Vec::new();
    while last != AS_STANDBY {
        assert!(
            rejoin.elapsed() < Duration::from_secs(150),
            "{master} to answer as a standby again; last: {last:?}"
        );
        last = statuses(api_of(&master));
        assert_ne!(
            last.get(1),
            Some(&Some(200)),
            "the deposed master said primary"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.wait_healthy_standby(&master, old_db.as_deref());

    // etcd goes away. The master stops vouching for itself within its freshness bound (3
    // sleepIntervals, under the fence deadline: 3 s here), whatever its PostgreSQL does; the
    // standby keeps running and stays in a read pool, but cannot vouch for a lag bound.
    let (new_master, new_standby) = (api_of(&standby), api_of(&master));
    c.etcd.stop();
    let stopped = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "/primary to answer 503 on the master cut off from the store",
        || status(new_master, "/primary") == Some(503),
    );
    eprintln!(
        "/primary 503 {:?} after the store stopped",
        stopped.elapsed()
    );
    stays_true(
        Duration::from_secs(6),
        "the standby cut off from the store answers 200 on /replica",
        || status(new_standby, "/replica") == Some(200),
    );
    assert_eq!(status(new_standby, "/replica?lag=1TB"), Some(503));
}
