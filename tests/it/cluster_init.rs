//! (a) 3 keepers + 2 sentinels + a proxy initialise a new cluster: one master, two streaming
//! standbys, and a row written through the proxy reaches all three instances.

use crate::support;

use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use support::{Cluster, ClusterBuilder, wait_until};

#[test]
fn three_keepers_initialise_with_two_streaming_standbys() {
    let mut c = ClusterBuilder::new("init").keepers(3).sentinels(2).start();
    let master = c.wait_master_serving(Duration::from_secs(150));

    wait_until(
        Duration::from_secs(120),
        "the master's pg_stat_replication to show 2 streaming standbys",
        || c.streaming_standbys(&master) == Some(2),
    );
    let cd = c.clusterdata();
    assert_eq!(
        cd["dbs"].as_object().map(|d| d.len()),
        Some(3),
        "expected one db per keeper: {cd:#}"
    );
    let master_db = cd["cluster"]["status"]["master"].as_str().unwrap();
    let standbys: Vec<&Value> = cd["dbs"]
        .as_object()
        .unwrap()
        .values()
        .filter(|db| db["uid"] != master_db)
        .collect();
    for db in &standbys {
        assert_eq!(db["spec"]["role"], "standby", "{db:#}");
        assert_eq!(db["spec"]["followConfig"]["dbuid"], master_db, "{db:#}");
    }

    c.psql_via_proxy("create table t (id int primary key, v text)")
        .unwrap();
    c.psql_via_proxy("insert into t values (1, 'through the proxy')")
        .unwrap();
    for uid in c.keepers.keys() {
        c.wait_keeper_rows(
            uid,
            "select v from t where id = 1",
            &["through the proxy"],
            Duration::from_secs(30),
        );
        let ro = c.psql_keeper(uid, "select pg_is_in_recovery()").unwrap();
        let want = if *uid == master { "f" } else { "t" };
        assert_eq!(
            ro[0][0].as_deref(),
            Some(want),
            "pg_is_in_recovery on {uid}"
        );
        // The keeper's own settings (it got one from STKEEPER_*) stay out of PostgreSQL's
        // environment, where pg_read_file('/proc/self/environ') would show them.
        let postmaster = c.keepers[uid].postmaster_pid().expect("postmaster pid");
        let environ = std::fs::read(format!("/proc/{postmaster}/environ")).unwrap();
        assert!(
            !String::from_utf8_lossy(&environ).contains("STKEEPER_"),
            "{uid}: PostgreSQL inherited the keeper's settings"
        );
        // A standby streams with the replication password from a file, never shown by
        // SHOW primary_conninfo.
        if *uid != master {
            let shown = c.psql_keeper(uid, "show primary_conninfo").unwrap();
            let shown = shown[0][0].clone().unwrap_or_default();
            assert!(shown.contains("passfile="), "{uid}: {shown}");
            assert!(!shown.contains(support::REPL_PASSWORD), "{uid}: {shown}");
        }
    }

    // stolonctl status --format json agrees with the cluster data (upstream's JSON shape).
    let status: Value = serde_json::from_str(&c.stolonctl_ok(&["status", "--format", "json"]))
        .expect("stolonctl status --format json is not JSON");
    assert_eq!(
        status["cluster"]["master_keeper_uid"],
        master.as_str(),
        "{status:#}"
    );
    assert_eq!(status["cluster"]["master_db_uid"], master_db, "{status:#}");
    assert_eq!(
        status["keepers"].as_array().map(Vec::len),
        Some(3),
        "{status:#}"
    );
    assert_eq!(
        status["sentinels"].as_array().map(Vec::len),
        Some(2),
        "{status:#}"
    );
    assert_eq!(
        status["sentinels"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["leader"] == true)
            .count(),
        1,
        "exactly one leader sentinel: {status:#}"
    );
    assert_eq!(
        Cluster::master_keeper_in(&cd).as_deref(),
        Some(master.as_str())
    );

    // PostgreSQL's socket and its lock are in the keeper's own directory: a lock file another
    // local user plants in /tmp for a keeper's port does not stop its PostgreSQL from starting.
    let standby = c.keepers.keys().find(|k| **k != master).unwrap().clone();
    let port = c.keepers[&standby].pg_port;
    let socket = c.keepers[&standby]
        .data_dir
        .join(format!("socket/.s.PGSQL.{port}"));
    assert!(socket.exists(), "no socket at {}", socket.display());
    let before = c.keepers[&standby].postmaster_pid();
    c.kill_keeper(&standby);
    // Planted by another user (this test's, root when CI runs it; PostgreSQL runs as postgres):
    // PostgreSQL cannot remove it from the sticky /tmp and would refuse to start.
    let planted = RemovedOnDrop(PathBuf::from(format!("/tmp/.s.PGSQL.{port}.lock")));
    let _ = std::fs::remove_file(&planted.0);
    std::fs::write(&planted.0, "1\n/\n").unwrap();
    // A password file a crash during pg_basebackup left behind goes when the keeper starts.
    let secrets = c.keepers[&standby].data_dir.join("secrets.tmp");
    std::fs::create_dir_all(&secrets).unwrap();
    let leftover = secrets.join("stolon-pgpass-left-by-a-crash");
    std::fs::write(&leftover, "*:*:*:*:secret\n").unwrap();
    c.start_keeper(&standby);
    wait_until(
        Duration::from_secs(90),
        "the restarted standby's PostgreSQL streaming again despite the planted /tmp lock",
        || {
            let now = c.keepers[&standby].postmaster_pid();
            now.is_some()
                && now != before
                && !leftover.exists()
                && c.psql_keeper(&standby, "select status from pg_stat_wal_receiver")
                    .is_ok_and(|rows| {
                        rows.first().and_then(|r| r[0].as_deref()) == Some("streaming")
                    })
        },
    );
}

/// A parameter the server does not know (a typo): stolonctl refuses it when a PostgreSQL is
/// installed where it runs. Written in anyway (stolonctl on a host without PostgreSQL, or
/// `clusterdata write`), the keepers leave it out and report it, and a keeper restarting its
/// PostgreSQL still starts it.
#[test]
fn an_unknown_pg_parameter_never_keeps_postgresql_from_starting() {
    let mut c = ClusterBuilder::new("badparam")
        .keepers(2)
        .sentinels(1)
        .allow_errors(&["pgParameters: unknown parameter \"shared_buffer\""])
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.keepers.keys().find(|k| **k != master).unwrap().clone();
    wait_until(Duration::from_secs(90), "the standby streaming", || {
        c.streaming_standbys(&master) == Some(1)
    });
    let refused = c.stolonctl(&[
        "update",
        "--patch",
        r#"{"pgParameters":{"shared_buffer":"16MB","work_mem":"5MB"}}"#,
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("did you mean \"shared_buffers\""),
        "{stderr}"
    );
    let mut cd = c.clusterdata();
    cd["cluster"]["spec"]["pgParameters"] = serde_json::json!({
        "shared_buffer": "16MB",
        "work_mem": "5MB",
    });
    let file = c.base.join("with-typo.json");
    std::fs::write(&file, cd.to_string()).unwrap();
    c.stolonctl_ok(&["clusterdata", "write", "-y", "-f", file.to_str().unwrap()]);
    // Applied everywhere: the standby is past its initialisation (a keeper killed during it
    // starts the copy over).
    for uid in [&master, &standby] {
        wait_until(Duration::from_secs(60), "work_mem applied", || {
            c.psql_keeper(uid, "show work_mem")
                .is_ok_and(|r| r.first().and_then(|r| r[0].as_deref()) == Some("5MB"))
        });
    }
    let before = c.keepers[&standby].postmaster_pid();
    c.kill_keeper(&standby);
    c.start_keeper(&standby);
    wait_until(
        Duration::from_secs(90),
        "the restarted standby's PostgreSQL up and applying the valid parameter",
        || {
            let now = c.keepers[&standby].postmaster_pid();
            now.is_some()
                && now != before
                && c.psql_keeper(&standby, "show work_mem")
                    .is_ok_and(|r| r.first().and_then(|r| r[0].as_deref()) == Some("5MB"))
        },
    );
}

/// A file this test created, removed even when the test fails.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_parameter_that_fails_only_at_restart_is_recovered_by_removing_it() {
    // automaticPgRestart: the keeper restarts PostgreSQL for a parameter that needs it.
    let mut c = ClusterBuilder::new("badrestart")
        .keepers(1)
        .sentinels(1)
        .spec(serde_json::json!({"automaticPgRestart": true}))
        .allow_errors(&[
            "does_not_exist",
            "postgres exited unexpectedly",
            "action failed",
        ])
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    // Accepted by every check (a library list is any string) and by a reload, which only marks
    // it pending; the restart it needs fails.
    c.stolonctl_ok(&[
        "update",
        "--patch",
        r#"{"pgParameters":{"shared_preload_libraries":"does_not_exist"}}"#,
    ]);
    wait_until(
        Duration::from_secs(60),
        "the restart for the parameter to fail (PostgreSQL down)",
        || c.psql_keeper(&master, "select 1").is_err(),
    );
    support::stays_true(
        Duration::from_secs(3),
        "PostgreSQL stays down while the parameter is there",
        || c.psql_keeper(&master, "select 1").is_err(),
    );
    c.allow_error("could not access file");
    // A merge patch removes a key with null.
    c.stolonctl_ok(&[
        "update",
        "--patch",
        r#"{"pgParameters":{"shared_preload_libraries":null}}"#,
    ]);
    wait_until(
        Duration::from_secs(90),
        "PostgreSQL serving again without the parameter",
        || {
            c.psql_via_proxy("show shared_preload_libraries")
                .is_ok_and(|r| r.first().and_then(|r| r[0].as_deref()) == Some(""))
        },
    );
}
