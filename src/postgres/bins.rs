//! Finding the PostgreSQL programs (`--pg-bin-path`, else `$PATH`) and their version.

use super::PgError;
use crate::cluster::PostgresBinaryVersion;
use std::path::{Path, PathBuf};

/// The oldest major version the keeper drives: the recovery settings it writes and reloads
/// (`primary_conninfo` and `primary_slot_name` reloadable), `pg_stat_wal_receiver`'s column
/// names and pg_rewind's automatic crash recovery all date from PostgreSQL 13.
pub const MIN_SUPPORTED_MAJOR: i32 = 13;

/// Absolute paths of the PostgreSQL programs the keeper runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    pub postgres: PathBuf,
    pub initdb: PathBuf,
    pub pg_ctl: PathBuf,
    pub pg_basebackup: PathBuf,
    pub pg_rewind: PathBuf,
    pub pg_controldata: PathBuf,
}

impl PgBinaries {
    /// Finds every program in `bin_path` when given, else in `$PATH`. A missing one is an error
    /// naming it and the fix, so the keeper fails at start rather than at the first failover.
    pub fn locate(bin_path: Option<&Path>) -> Result<PgBinaries, PgError> {
        let dirs: Vec<PathBuf> = match bin_path {
            Some(dir) => vec![dir.to_path_buf()],
            None => std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        };
        let searched = match bin_path {
            Some(dir) => dir.display().to_string(),
            None => "$PATH".to_string(),
        };
        let find = |name: &'static str| -> Result<PathBuf, PgError> {
            dirs.iter()
                .map(|d| d.join(name))
                .find(|p| is_executable(p))
                .ok_or_else(|| PgError::BinaryNotFound {
                    name,
                    searched: searched.clone(),
                })
        };
        Ok(PgBinaries {
            postgres: find("postgres")?,
            initdb: find("initdb")?,
            pg_ctl: find("pg_ctl")?,
            pg_basebackup: find("pg_basebackup")?,
            pg_rewind: find("pg_rewind")?,
            pg_controldata: find("pg_controldata")?,
        })
    }

    /// The version, or an error naming it when it is older than [`MIN_SUPPORTED_MAJOR`]: at
    /// start, rather than as a PostgreSQL FATAL on a setting it does not know later.
    pub fn supported_version(&self) -> Result<PostgresBinaryVersion, PgError> {
        let v = self.version()?;
        if v.maj < MIN_SUPPORTED_MAJOR {
            return Err(PgError::UnsupportedVersion {
                found: format!("{}.{}", v.maj, v.min),
                program: self.postgres.display().to_string(),
                min: MIN_SUPPORTED_MAJOR,
            });
        }
        Ok(v)
    }

    /// Runs `postgres --version` (allowed as root) and parses e.g.
    /// `postgres (PostgreSQL) 15.13 (Debian 15.13-0+deb12u1)`.
    pub fn version(&self) -> Result<PostgresBinaryVersion, PgError> {
        parse_version(&self.postgres_output("--version")?)
    }

    /// The server's own parameter list (`postgres --describe-config`, allowed as root).
    pub fn server_parameters(&self) -> Result<super::ServerParameters, PgError> {
        Ok(super::ServerParameters::parse(
            &self.postgres_output("--describe-config")?,
        ))
    }

    fn postgres_output(&self, arg: &str) -> Result<String, PgError> {
        let program = self.postgres.display().to_string();
        let mut cmd = std::process::Command::new(&self.postgres);
        super::strip_private_env(&mut cmd);
        let out = cmd.arg(arg).output().map_err(|source| PgError::Spawn {
            program: program.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(PgError::CommandFailed {
                program,
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub(crate) fn parse_version(text: &str) -> Result<PostgresBinaryVersion, PgError> {
    let bad = || PgError::Unexpected {
        what: "postgres --version output",
        detail: text.trim().to_string(),
    };
    // The version is the first token starting with a digit ("15.13", "16beta1", "9.6.24").
    let token = text
        .split_whitespace()
        .find(|t| t.starts_with(|c: char| c.is_ascii_digit()))
        .ok_or_else(bad)?;
    let mut nums = token.split(|c: char| !c.is_ascii_digit());
    let maj: i32 = nums.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
    let min: i32 = nums.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    Ok(PostgresBinaryVersion { maj, min })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        let v = parse_version("postgres (PostgreSQL) 15.13 (Debian 15.13-0+deb12u1)\n").unwrap();
        assert_eq!((v.maj, v.min), (15, 13));
        let v = parse_version("postgres (PostgreSQL) 9.6.24").unwrap();
        assert_eq!((v.maj, v.min), (9, 6));
        let v = parse_version("postgres (PostgreSQL) 17beta1").unwrap();
        assert_eq!((v.maj, v.min), (17, 0));
        assert!(parse_version("garbage").is_err());
    }

    #[test]
    fn missing_binary_names_it_and_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let err = PgBinaries::locate(Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgres"), "{err}");
        assert!(err.contains("--pg-bin-path"), "{err}");
    }

    #[test]
    fn versions_before_13_are_refused_naming_the_version_and_the_minimum() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = |name: &str, version: &str| {
            let p = dir.path().join(name);
            std::fs::write(
                &p,
                format!("#!/bin/sh\necho 'postgres (PostgreSQL) {version}'\n"),
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        for name in [
            "initdb",
            "pg_ctl",
            "pg_basebackup",
            "pg_rewind",
            "pg_controldata",
        ] {
            fake(name, "");
        }
        fake("postgres", "12.19");
        let bins = PgBinaries::locate(Some(dir.path())).unwrap();
        let err = bins.supported_version().unwrap_err().to_string();
        assert!(err.contains("PostgreSQL 12.19"), "{err}");
        assert!(err.contains("PostgreSQL 13 or later"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        fake("postgres", "13.1");
        assert_eq!(bins.supported_version().unwrap().maj, 13);
    }
}
