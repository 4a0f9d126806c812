//! `--metrics-listen-address` on real keepers and a sentinel: upstream's series report the
//! roles and the checks of a running cluster, the sentinel the standby's lag, and a failover
//! is counted.

use crate::support;

use std::time::Duration;
use support::scrape::{metric, scrape, value};
use support::{Cluster, ClusterBuilder, free_ports, wait_for, wait_until};

fn flag(port: u16) -> [String; 2] {
    [
        "--metrics-listen-address".into(),
        format!("127.0.0.1:{port}"),
    ]
}

#[test]
fn keeper_and_sentinel_metrics_follow_the_cluster() {
    let mut c = ClusterBuilder::new("metrics")
        .keepers(0)
        .sentinels(0)
        .start();
    let ports = free_ports(3);
    let keeper_ports = [("keeper0", ports[0]), ("keeper1", ports[1])];
    let sentinel_port = ports[2];
    for (uid, port) in keeper_ports {
        let f = flag(port);
        c.add_keeper(uid, &[&f[0], &f[1]]);
    }
    let f = flag(sentinel_port);
    c.start_sentinel_with(0, &[&f[0], &f[1]]);

    let master = c.wait_master_serving(Duration::from_secs(120));
    c.wait_dbs_converged(2, Duration::from_secs(120));
    let port_of = |uid: &str| keeper_ports.iter().find(|(k, _)| *k == uid).unwrap().1;
    let standby = if master == "keeper0" {
        "keeper1"
    } else {
        "keeper0"
    };

    for (uid, role) in [(master.as_str(), "master"), (standby, "standby")] {
        let port = port_of(uid);
        wait_until(
            Duration::from_secs(30),
            &format!("{uid}'s metrics to show it {role}"),
            || {
                let Some(text) = scrape(port) else {
                    return false;
                };
                let local = format!("stolon_keeper_local_role{{role=\"{role}\"}}");
                let target = format!("stolon_keeper_target_role{{role=\"{role}\"}}");
                value(&text, &local) == Some(1.0)
                    && value(&text, &target) == Some(1.0)
                    && value(&text, "stolon_keeper_last_sync_success_seconds")
                        .is_some_and(|t| t > 0.0)
            },
        );
        let text = scrape(port).unwrap_or_default();
        let id = r#"stolon_cluster_identifier{cluster_name="metrics",component="keeper"}"#;
        assert_eq!(value(&text, id), Some(1.0), "{text}");
        assert_eq!(
            value(&text, "stolon_keeper_sleep_interval"),
            Some(1.0),
            "{text}"
        );
        assert!(
            value(&text, "stolon_keeper_clusterdata_last_valid_update_seconds")
                .is_some_and(|t| t > 0.0),
            "{text}"
        );
        assert_eq!(
            value(&text, "stolon_keeper_needs_restart"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            value(&text, "stolon_keeper_fencing_events_total"),
            Some(0.0),
            "{text}"
        );
    }

    let text = wait_for(
        Duration::from_secs(30),
        "the sentinel to lead and report the standby's lag",
        || {
            let text = scrape(sentinel_port)?;
            let lag = text.lines().any(|l| {
                l.starts_with(&format!(
                    "stolon_sentinel_standby_lag_bytes{{keeper=\"{standby}\","
                ))
            });
            (lag && value(&text, "stolon_sentinel_is_leader") == Some(1.0)).then_some(text)
        },
    );
    // At least once: the sentinel stands again when it replaces its lease to follow the
    // spec's sleepInterval (src/sentinel/mod.rs), which can count a second election.
    assert!(
        value(&text, "stolon_sentinel_leader_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "stolon_sentinel_failovers_total"),
        Some(0.0),
        "{text}"
    );
    assert!(
        value(&text, "stolon_sentinel_last_cluster_check_success_seconds").is_some_and(|t| t > 0.0),
        "{text}"
    );

    // The master's keeper dies: the sentinel fails over to the standby, and counts it.
    c.kill_keeper(&master);
    wait_until(
        Duration::from_secs(60),
        "the standby elected master",
        || {
            c.try_clusterdata()
                .and_then(|cd| Cluster::master_keeper_in(&cd))
                .is_some_and(|m| m == standby)
        },
    );
    wait_until(Duration::from_secs(10), "the failover counted", || {
        metric(sentinel_port, "stolon_sentinel_failovers_total") == Some(1.0)
    });
    wait_until(
        Duration::from_secs(30),
        "the new master's keeper to report it",
        || {
            metric(
                port_of(standby),
                r#"stolon_keeper_local_role{role="master"}"#,
            ) == Some(1.0)
        },
    );
}
