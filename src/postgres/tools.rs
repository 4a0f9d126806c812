//! The PostgreSQL programs the keeper runs to completion: initdb, pg_basebackup, pg_ctl promote.
//! Passwords never appear on a command line: they go through a 0600 file that is removed after.

use super::conf::ReplConn;
use super::files::chown_to;
use super::logline::{PgLevel, forward, line_level};
use super::{PgBinaries, PgError, Pgdata, RunAs, remove_pgdata};
use crate::cluster::NewConfig;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncReadExt;

/// Where the short-lived secret files of a data directory go: next to it, in a directory of the
/// keeper's own (not the shared /tmp), so that a crash's leftovers can be removed at the next
/// start ([`remove_stale_secrets`]) without touching another keeper's.
fn secrets_dir(pgdata: &Path) -> PathBuf {
    pgdata.parent().unwrap_or(pgdata).join(SECRETS_DIR)
}

const SECRETS_DIR: &str = "secrets.tmp";

/// Removes the secret files a crash (a SIGKILL during initdb or pg_basebackup) left behind.
pub fn remove_stale_secrets(pgdata: &Path) -> Result<(), PgError> {
    let dir = secrets_dir(pgdata);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PgError::io(&dir, e)),
        _ => Ok(()),
    }
}

/// A 0600 file holding a secret (tempfile creates it private), owned by `run_as`, removed on
/// drop; in the data directory's [`secrets_dir`] (0700, owned by `run_as` too).
pub(super) struct SecretFile(tempfile::NamedTempFile);

impl SecretFile {
    pub(super) fn create(
        pgdata: &Path,
        prefix: &str,
        content: &str,
        run_as: Option<RunAs>,
    ) -> Result<SecretFile, PgError> {
        let dir = secrets_dir(pgdata);
        ensure_private_dir(&dir, run_as)?;
        let mut f = tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(&dir)
            .map_err(|e| PgError::io(&dir, e))?;
        f.write_all(content.as_bytes())
            .map_err(|e| PgError::io(f.path(), e))?;
        chown_to(f.path(), run_as)?;
        Ok(SecretFile(f))
    }

    pub(super) fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Creates `dir` (0700, owned by `run_as`) unless it exists: PGDATA, or the secrets beside it.
pub(super) fn ensure_private_dir(dir: &Path, run_as: Option<RunAs>) -> Result<(), PgError> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| PgError::io(dir, e))?;
    chown_to(dir, run_as)
}

pub(super) fn command(program: &Path, run_as: Option<RunAs>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    super::without_private_env(&mut cmd)
        // The caller's cwd may not be readable by `run_as`; the tools get absolute paths.
        .current_dir("/")
        .process_group(0)
        .stdin(Stdio::null());
    if let Some(r) = run_as {
        cmd.uid(r.uid).gid(r.gid);
    }
    cmd
}

/// Kills the tool's whole process group if the future running it is dropped (e.g. by a
/// timeout): pg_basebackup forks a WAL streamer that would otherwise outlive it.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

pub(super) async fn run_to_end(
    mut cmd: tokio::process::Command,
    program: &Path,
) -> Result<String, PgError> {
    let name = program.display().to_string();
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|source| PgError::Spawn {
        program: name.clone(),
        source,
    })?;
    let mut guard = GroupGuard(child.id().map(|p| p as i32));
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| PgError::Spawn {
            program: name.clone(),
            source,
        })?;
    guard.0 = None;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(PgError::CommandFailed {
            program: name,
            status: out.status.to_string(),
            output: last_lines(&text, 5),
        })
    }
}

/// `initdb -D <pgdata> -U <superuser> [--pwfile] [--locale] [--encoding] [--data-checksums]`.
/// PGDATA is created 0700 (owned by its owner) if missing; a failed initdb removes it so the next
/// attempt starts clean.
pub async fn initdb(
    bins: &PgBinaries,
    pgdata: &Pgdata,
    superuser: &str,
    password: Option<&str>,
    new_config: Option<&NewConfig>,
) -> Result<(), PgError> {
    let run_as = pgdata.owner();
    let pgdata = std::path::absolute(pgdata).map_err(|e| PgError::io(pgdata.path(), e))?;
    ensure_private_dir(&pgdata, run_as)?;
    let pwfile = match password {
        Some(pw) => Some(SecretFile::create(&pgdata, "stolon-initdb-pw", pw, run_as)?),
        None => None,
    };
    let mut cmd = command(&bins.initdb, run_as);
    cmd.arg("-D").arg(&pgdata).arg("-U").arg(superuser);
    if let Some(f) = &pwfile {
        cmd.arg(format!("--pwfile={}", f.path().display()));
    }
    if let Some(nc) = new_config {
        if !nc.locale.is_empty() {
            cmd.arg(format!("--locale={}", nc.locale));
        }
        if !nc.encoding.is_empty() {
            cmd.arg(format!("--encoding={}", nc.encoding));
        }
        if nc.data_checksums {
            cmd.arg("--data-checksums");
        }
    }
    match run_to_end(cmd, &bins.initdb).await {
        Ok(_) => Ok(()),
        Err(e) => {
            if let Err(rm) = remove_pgdata(&pgdata) {
                tracing::warn!(error = %rm, "cannot remove the data directory of a failed initdb");
            }
            Err(e)
        }
    }
}

/// Runs a tool that reports `-P`/`--progress` lines on stderr (pg_basebackup, pg_rewind):
/// `progress(copied, total)` gets each of them, the other lines are logged, and a failure
/// carries the last of them.
pub(super) async fn run_reporting_progress(
    mut cmd: tokio::process::Command,
    program_path: &Path,
    progress: &mut impl FnMut(u64, u64),
) -> Result<(), PgError> {
    let program = program_path.display().to_string();
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| PgError::Spawn {
        program: program.clone(),
        source,
    })?;
    let mut guard = GroupGuard(child.id().map(|p| p as i32));
    let mut stderr = child.stderr.take().ok_or_else(|| PgError::Unexpected {
        what: "progress-reporting tool",
        detail: format!("{program}: no stderr pipe"),
    })?;
    // Progress lines end in '\r' on a terminal and '\n' otherwise: split on both.
    let mut all = String::new();
    let mut pending = Vec::new();
    let mut level = PgLevel::Info;
    let mut buf = [0u8; 4096];
    loop {
        let n = stderr
            .read(&mut buf)
            .await
            .map_err(|e| PgError::io(program_path, e))?;
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\n' || b == b'\r' {
                let line = String::from_utf8_lossy(&pending).into_owned();
                pending.clear();
                if let Some((done, total)) = parse_progress(&line) {
                    progress(done, total);
                } else if !line.trim().is_empty() {
                    level = line_level(&line, level);
                    forward(level, None, &line);
                    all.push_str(&line);
                    all.push('\n');
                }
            } else {
                pending.push(b);
            }
        }
    }
    all.push_str(&String::from_utf8_lossy(&pending));
    let status = child.wait().await.map_err(|source| PgError::Spawn {
        program: program.clone(),
        source,
    })?;
    guard.0 = None;
    if status.success() {
        Ok(())
    } else {
        Err(PgError::CommandFailed {
            program,
            status: status.to_string(),
            output: last_lines(&all, 5),
        })
    }
}

/// Parses a `pg_basebackup -P` line such as `  1234/56789 kB (2%), 0/1 tablespace (...)` into
/// (copied, total) bytes.
pub(crate) fn parse_progress(line: &str) -> Option<(u64, u64)> {
    let head = &line[..line.find(" kB")?];
    let (done, total) = head.trim().rsplit(' ').next()?.split_once('/')?;
    Some((
        done.parse::<u64>().ok()? * 1024,
        total.parse::<u64>().ok()? * 1024,
    ))
}

/// `pg_basebackup -D <pgdata> -v -P -X stream -c fast -d <conninfo> [--slot <slot>]`, the
/// password in a temporary PGPASSFILE. No `-R`: the keeper writes the recovery settings itself.
/// `slot` must already exist on the source (the master's keeper creates `stolon_<dbuid>`).
/// `progress(copied, total)` is called with bytes as pg_basebackup reports them. On failure the
/// data directory is removed. Dropping the future kills pg_basebackup but leaves the partial
/// directory to the caller.
pub async fn pg_basebackup(
    bins: &PgBinaries,
    pgdata: &Pgdata,
    conn: &ReplConn,
    slot: Option<&str>,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), PgError> {
    let run_as = pgdata.owner();
    let pgdata = std::path::absolute(pgdata).map_err(|e| PgError::io(pgdata.path(), e))?;
    ensure_private_dir(&pgdata, run_as)?;
    let passfile = match conn.passfile_text() {
        Some(text) => Some(SecretFile::create(&pgdata, "stolon-pgpass", &text, run_as)?),
        None => None,
    };
    let mut cmd = command(&bins.pg_basebackup, run_as);
    // ⚠ upstream waits for a spread checkpoint on the master (up to minutes with default
    // settings, reference pain point 9); a fast checkpoint starts the copy at once.
    cmd.arg("-D")
        .arg(&pgdata)
        .args(["-v", "-P", "-X", "stream", "-c", "fast", "-d"])
        .arg(conn.conninfo(None));
    if let Some(s) = slot {
        cmd.arg(format!("--slot={s}"));
    }
    match &passfile {
        Some(f) => cmd.env("PGPASSFILE", f.path()),
        None => cmd.env_remove("PGPASSFILE"),
    };
    cmd.env_remove("PGPASSWORD");
    let result = run_reporting_progress(cmd, &bins.pg_basebackup, &mut progress).await;
    if result.is_err()
        && let Err(rm) = remove_pgdata(&pgdata)
    {
        tracing::warn!(error = %rm, "cannot remove the data directory of a failed pg_basebackup");
    }
    result
}

/// `pg_ctl promote -W -D <pgdata>`: asks the instance to end recovery, without waiting (pg_ctl
/// and pg_promote() look every 100 ms; the caller watches more closely, see
/// `PgClient::wait_promoted`). pg_ctl refuses to run as root: it runs as the data directory's
/// owner.
pub async fn promote(bins: &PgBinaries, pgdata: &Pgdata) -> Result<(), PgError> {
    let run_as = pgdata.owner();
    let pgdata = std::path::absolute(pgdata).map_err(|e| PgError::io(pgdata.path(), e))?;
    let mut cmd = command(&bins.pg_ctl, run_as);
    cmd.args(["promote", "-W", "-D"]).arg(&pgdata);
    run_to_end(cmd, &bins.pg_ctl).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basebackup_progress() {
        assert_eq!(
            parse_progress("    0/22908 kB (0%), 0/1 tablespace (/data/backup_label    )"),
            Some((0, 22908 * 1024))
        );
        assert_eq!(
            parse_progress("22918/22918 kB (100%), 1/1 tablespace"),
            Some((22918 * 1024, 22918 * 1024))
        );
        assert_eq!(
            parse_progress("pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1"),
            None
        );
    }

    #[test]
    fn secret_files_are_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("postgres");
        let f = SecretFile::create(&pgdata, "stolon-test", "pw", None).unwrap();
        let path = f.path().to_path_buf();
        assert!(path.starts_with(dir.path().join(SECRETS_DIR)));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        drop(f);
        assert!(!path.exists());
        // What a crash left behind goes at the next start.
        let left = SecretFile::create(&pgdata, "stolon-test", "pw", None).unwrap();
        let left_path = left.path().to_path_buf();
        std::mem::forget(left);
        remove_stale_secrets(&pgdata).unwrap();
        assert!(!left_path.exists());
        remove_stale_secrets(&pgdata).unwrap();
    }
}
