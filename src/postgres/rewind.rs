//! pg_rewind: brings a data directory that went its own way (a failed master, or a standby
//! that got ahead of the new master on the old timeline) back in line with the db it must
//! follow by copying only what changed since they diverged, instead of all of it with
//! pg_basebackup.
//!
//! Three things make pg_rewind fail on a keeper's data directory unless handled here:
//! - after a promotion the source's control file still names the old timeline until its next
//!   checkpoint, and pg_rewind then sees nothing to rewind: [`checkpoint`] the source first;
//! - `postgresql.auto.conf` is a symlink to /dev/null (`disable_alter_system`), while a live
//!   source reports the file it points to as a regular file: pg_rewind refuses a file "of
//!   different type in source and target";
//! - a target that was not shut down cleanly needs crash recovery first, and the checkpoint
//!   that ends it removes the WAL before it, including the last checkpoint the two servers
//!   share, without which pg_rewind cannot work ("could not find previous WAL record"): the
//!   recovery is run here with `wal_keep_size` at its maximum (pg_rewind's own would remove
//!   it), and without `standby.signal`, which single-user mode refuses.

use super::conf::ReplConn;
use super::files::{remove_signal_files, write_file_as};
use super::tools::{SecretFile, command, run_reporting_progress, run_to_end};
use super::{PgBinaries, PgError, Pgdata};
use std::path::Path;
use std::time::Duration;

/// Runs `CHECKPOINT` on the source as `conn.user` (a superuser), so that its control file shows
/// the timeline it was promoted to.
pub async fn checkpoint(conn: &ReplConn, timeout: Duration) -> Result<(), PgError> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&conn.host)
        .port(conn.port)
        .user(&conn.user)
        .dbname("postgres")
        .application_name(&conn.application_name)
        .connect_timeout(timeout);
    if let Some(pw) = &conn.password {
        cfg.password(pw);
    }
    let at = format!("{}:{}", conn.host, conn.port);
    let work = async {
        let (client, connection) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| PgError::connect(at.clone(), e))?;
        let driver = tokio::spawn(connection);
        let done = client
            .batch_execute("CHECKPOINT")
            .await
            .map_err(|e| PgError::query("CHECKPOINT on the rewind source", e));
        drop(client);
        let _ = driver.await;
        done
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| PgError::Timeout {
            what: format!("CHECKPOINT on {at}"),
            after: timeout,
        })?
}

/// `pg_rewind --target-pgdata <pgdata> --source-server '<conninfo> dbname=postgres' --progress`
/// as the data directory's owner, the password in a temporary PGPASSFILE. The target must be
/// stopped. `progress(copied, total)` gets the bytes pg_rewind reports. On success the data
/// directory holds the source's configuration files: the caller writes its own again, and the
/// standby signal. On failure the directory may be half rewound: only a full resync is safe.
pub async fn pg_rewind(
    bins: &PgBinaries,
    pgdata: &Pgdata,
    source: &ReplConn,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), PgError> {
    let run_as = pgdata.owner();
    let target = std::path::absolute(pgdata).map_err(|e| PgError::io(pgdata.path(), e))?;
    prepare_target(pgdata)?;
    if !cleanly_shut_down(pgdata.path())? {
        recover_keeping_wal(bins, pgdata).await?;
    }
    let passfile = match source.passfile_text() {
        Some(text) => Some(SecretFile::create(&target, "stolon-pgpass", &text, run_as)?),
        None => None,
    };
    let mut cmd = command(&bins.pg_rewind, run_as);
    cmd.arg("--target-pgdata")
        .arg(&target)
        .arg("--source-server")
        .arg(format!("{} dbname=postgres", source.conninfo(None)))
        .arg("--progress");
    match &passfile {
        Some(f) => cmd.env("PGPASSFILE", f.path()),
        None => cmd.env_remove("PGPASSFILE"),
    };
    cmd.env_remove("PGPASSWORD");
    run_reporting_progress(cmd, &bins.pg_rewind, &mut progress).await
}

/// `global/pg_control`'s state field (offset 16, after the system identifier and two version
/// numbers, the same in every supported version) says "shut down" or "shut down in
/// recovery": pg_rewind takes the data directory as it is.
fn cleanly_shut_down(pgdata: &Path) -> Result<bool, PgError> {
    const STATE_OFFSET: usize = 16;
    const DB_SHUTDOWNED: u32 = 1;
    const DB_SHUTDOWNED_IN_RECOVERY: u32 = 2;
    let path = pgdata.join("global").join("pg_control");
    let bytes = std::fs::read(&path).map_err(|e| PgError::io(&path, e))?;
    let state = bytes
        .get(STATE_OFFSET..STATE_OFFSET + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| PgError::Unexpected {
            what: "pg_control",
            detail: format!("{} is only {} bytes", path.display(), bytes.len()),
        })?;
    Ok(matches!(state, DB_SHUTDOWNED | DB_SHUTDOWNED_IN_RECOVERY))
}

/// Crash recovery in single-user mode, as pg_rewind would run it, but keeping every WAL file.
async fn recover_keeping_wal(bins: &PgBinaries, pgdata: &Pgdata) -> Result<(), PgError> {
    let target = std::path::absolute(pgdata).map_err(|e| PgError::io(pgdata.path(), e))?;
    tracing::info!(pgdata = %target.display(), "crash recovery before pg_rewind (keeping all WAL)");
    let mut cmd = command(&bins.postgres, pgdata.owner());
    cmd.args(["--single", "-F", "-D"]).arg(&target).args([
        "-c",
        "wal_keep_size=2147483647",
        "template1",
    ]);
    run_to_end(cmd, &bins.postgres).await.map(|_| ())
}

/// Removes what makes pg_rewind refuse a keeper's data directory (see the module doc). The
/// caller writes the standby signal again after the rewind, and every start puts the
/// postgresql.auto.conf symlink back.
fn prepare_target(pgdata: &Pgdata) -> Result<(), PgError> {
    remove_signal_files(pgdata.path())?;
    let auto_conf = pgdata.path().join("postgresql.auto.conf");
    if std::fs::symlink_metadata(&auto_conf).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(&auto_conf).map_err(|e| PgError::io(&auto_conf, e))?;
        write_file_as(&auto_conf, b"", pgdata.owner())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_file_state_tells_a_clean_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("global")).unwrap();
        let write_state = |state: u32| {
            let mut control = vec![0u8; 64];
            control[16..20].copy_from_slice(&state.to_ne_bytes());
            std::fs::write(dir.path().join("global/pg_control"), control).unwrap();
        };
        for (state, clean) in [(1, true), (2, true), (4, false), (6, false)] {
            write_state(state);
            assert_eq!(
                cleanly_shut_down(dir.path()).unwrap(),
                clean,
                "state {state}"
            );
        }
        std::fs::write(dir.path().join("global/pg_control"), [0u8; 8]).unwrap();
        assert!(cleanly_shut_down(dir.path()).is_err());
    }

    #[test]
    fn target_loses_its_signals_and_auto_conf_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = Pgdata::new(dir.path());
        std::fs::write(dir.path().join("standby.signal"), "").unwrap();
        std::os::unix::fs::symlink("/dev/null", dir.path().join("postgresql.auto.conf")).unwrap();
        prepare_target(&pgdata).unwrap();
        assert!(!dir.path().join("standby.signal").exists());
        let meta = std::fs::symlink_metadata(dir.path().join("postgresql.auto.conf")).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.len(), 0);
        // Idempotent: a retried rewind finds nothing left to remove.
        prepare_target(&pgdata).unwrap();
    }
}
