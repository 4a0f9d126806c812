//! initMode pitr: a cluster archiving its WAL is backed up with pg_basebackup; a second cluster
//! is created from that backup and archive, recovering up to a named restore point, then runs
//! as a normal cluster with a standby.

use crate::support;

use serde_json::json;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::procs::RunAs;
use support::{ClusterBuilder, REPL_PASSWORD, REPL_USER, pg_bin, wait_until};

/// A directory the keepers' user owns (they archive into it and restore from it).
fn keepers_dir(parent: &Path, name: &str) -> std::path::PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    RunAs::keeper_user().chown(&dir);
    dir
}

fn pg_basebackup(port: u16, into: &Path) {
    let mut cmd = Command::new(Path::new(&pg_bin()).join("pg_basebackup"));
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", REPL_USER])
        .args(["-X", "stream", "-c", "fast", "-D"])
        .arg(into)
        .env("PGPASSWORD", REPL_PASSWORD)
        .current_dir("/");
    if let RunAs::User { uid, gid } = RunAs::keeper_user() {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "pg_basebackup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_cluster_is_restored_from_a_base_backup_and_archive_up_to_a_restore_point() {
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let archive = keepers_dir(work.path(), "archive");
    let backup = keepers_dir(work.path(), "backup");

    let source = ClusterBuilder::new("pitr-src")
        .keepers(1)
        .sentinels(1)
        .spec(json!({"pgParameters": {
            "archive_mode": "on",
            "archive_command": format!("cp %p {}/%f", archive.display()),
        }}))
        .start();
    let master = source.wait_master_serving(Duration::from_secs(150));
    source
        .psql_keeper(
            &master,
            "create table t (id int primary key, v text); insert into t values (1, 'in the backup')",
        )
        .unwrap();
    pg_basebackup(source.keepers[&master].pg_port, &backup);
    // One statement per call: a multi-statement query is one transaction, committed after
    // the restore point.
    let run = |sql: &str| source.psql_keeper(&master, sql).unwrap();
    run("insert into t values (2, 'archived after the backup')");
    run("select pg_create_restore_point('before_3')");
    run("insert into t values (3, 'after the restore point')");
    let switched = run("select pg_walfile_name(pg_switch_wal())")[0][0]
        .clone()
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the WAL with the restore point archived",
        || archive.join(&switched).exists(),
    );
    drop(source);

    let c = ClusterBuilder::new("pitr")
        .keepers(2)
        .sentinels(1)
        .spec(json!({
            "initMode": "pitr",
            "pitrConfig": {
                "dataRestoreCommand": format!("cp -a {}/. %d", backup.display()),
                "archiveRecoverySettings": {
                    "restoreCommand": format!("cp {}/%f %p", archive.display()),
                },
                "recoveryTargetSettings": {"recoveryTargetName": "before_3"},
            },
        }))
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    let rows = c.psql_via_proxy("select v from t order by id").unwrap();
    let got: Vec<Option<&str>> = rows.iter().map(|r| r[0].as_deref()).collect();
    assert_eq!(
        got,
        vec![Some("in the backup"), Some("archived after the backup")],
        "the restore must replay the archive up to the restore point, and no further"
    );
    c.psql_via_proxy("insert into t values (4, 'written after the restore')")
        .unwrap();
    let standby = c.keepers.keys().find(|k| **k != master).unwrap().clone();
    c.wait_keeper_rows(
        &standby,
        "select v from t order by id",
        &[
            "in the backup",
            "archived after the backup",
            "written after the restore",
        ],
        Duration::from_secs(120),
    );
    let log = c.keeper_log(&master);
    assert!(log.contains("archive recovery ended: promoted"), "{log}");
}

#[test]
fn a_failed_restore_is_reported_and_tried_again() {
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let backup = keepers_dir(work.path(), "backup");
    let empty_archive = keepers_dir(work.path(), "archive");
    let marker = keepers_dir(work.path(), "state").join("tried");
    let source = ClusterBuilder::new("pitr-retry-src")
        .keepers(1)
        .sentinels(1)
        .start();
    let master = source.wait_master_serving(Duration::from_secs(150));
    source
        .psql_keeper(
            &master,
            "create table t (v text); insert into t values ('restored')",
        )
        .unwrap();
    pg_basebackup(source.keepers[&master].pg_port, &backup);
    drop(source);

    // The backup store is unreachable the first time.
    let c = ClusterBuilder::new("pitr-retry")
        .keepers(1)
        .sentinels(1)
        .spec(json!({
            "initMode": "pitr",
            "pitrConfig": {
                "dataRestoreCommand": format!(
                    "if [ -e {m} ]; then cp -a {b}/. %d; else touch {m}; echo 'backup store unreachable' >&2; exit 1; fi",
                    m = marker.display(),
                    b = backup.display()
                ),
                "archiveRecoverySettings": {
                    "restoreCommand": format!("cp {}/%f %p", empty_archive.display()),
                },
            },
        }))
        .allow_errors(&["backup store unreachable", "db failed to initialize or resync"])
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    let rows = c.psql_via_proxy("select v from t").unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("restored"));
    let log = c.keeper_log(&master);
    assert!(
        log.contains("dataRestoreCommand") && log.contains("backup store unreachable"),
        "the failed restore is in the keeper's log with the command's own words:\n{log}"
    );
}
