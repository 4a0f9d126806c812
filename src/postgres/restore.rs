//! initMode pitr: bringing a base backup back with the operator's `dataRestoreCommand`.

use super::files::{is_initialized, remove_signal_files};
use super::tools::{command, ensure_private_dir, run_to_end};
use super::{PgError, Pgdata};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const SHELL: &str = "/bin/sh";

/// Runs `data_restore_command` with `/bin/sh -c` as the data directory's owner, `%d` replaced
/// by PGDATA's absolute path (upstream's one placeholder), into an empty PGDATA it creates
/// (mode 0700) first. Then checks that a data directory came out, leaves it 0700 (PostgreSQL
/// refuses a wider one) and removes any signal file the backup carried: the caller decides
/// how it recovers. The command's environment has none of the keeper's secrets.
pub async fn restore_base_backup(
    pgdata: &Pgdata,
    data_restore_command: &str,
) -> Result<(), PgError> {
    let run_as = pgdata.owner();
    let target = std::path::absolute(pgdata).map_err(|e| PgError::io(pgdata.path(), e))?;
    ensure_private_dir(&target, run_as)?;
    let script = data_restore_command.replace("%d", &target.display().to_string());
    let mut cmd = command(Path::new(SHELL), run_as);
    cmd.arg("-c").arg(&script);
    run_to_end(cmd, Path::new(SHELL))
        .await
        .map_err(|e| match e {
            PgError::CommandFailed { status, output, .. } => PgError::CommandFailed {
                // Not the command itself: it may carry credentials.
                program: "dataRestoreCommand".into(),
                status,
                output,
            },
            other => other,
        })?;
    if !is_initialized(&target) {
        return Err(PgError::Unexpected {
            what: "dataRestoreCommand result",
            detail: format!(
                "{} holds no global/pg_control: the command must restore a base backup into %d",
                target.display()
            ),
        });
    }
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| PgError::io(&target, e))?;
    remove_signal_files(&target)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_command_gets_pgdata_for_percent_d_and_must_leave_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("backup");
        std::fs::create_dir_all(backup.join("global")).unwrap();
        std::fs::write(backup.join("global/pg_control"), b"x").unwrap();
        std::fs::write(backup.join("standby.signal"), b"").unwrap();
        let pgdata = Pgdata::new(dir.path().join("postgres"));
        restore_base_backup(&pgdata, &format!("cp -a {}/. %d", backup.display()))
            .await
            .unwrap();
        assert!(is_initialized(pgdata.path()));
        assert!(!pgdata.path().join("standby.signal").exists());
        let mode = std::fs::metadata(pgdata.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);

        let empty = Pgdata::new(dir.path().join("empty"));
        let err = restore_base_backup(&empty, "true").await.unwrap_err();
        assert!(err.to_string().contains("no global/pg_control"), "{err}");
        let failing = Pgdata::new(dir.path().join("failing"));
        let err = restore_base_backup(&failing, "echo no backup here >&2; exit 3")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("dataRestoreCommand"), "{err}");
        assert!(err.contains("no backup here"), "{err}");
    }
}
