//! The PostgreSQL toolkit the keeper drives: locating binaries, initdb,
//! running postgres as a child process, pg_basebackup, pg_rewind, promotion, postgresql.conf and pg_hba.conf
//! rendering, and the queries behind the state a keeper reports.
//!
//!
//! Everything that acts on a data directory takes a [`Pgdata`]: the path and the OS user that
//! owns it. PostgreSQL programs run as that user and the files written into PGDATA are chowned
//! to it. The keeper refuses root and runs everything as itself ([`Pgdata::new`]); tests started
//! as root, where PostgreSQL refuses to run, use [`Pgdata::owned_by`] the `postgres` user.
//!
//! The unix socket directory is a parameter everywhere (the keeper's `--pg-socket-dir`, by
//! default a directory of its own: src/keeper/run.rs); the keeper is its only client (proxies
//! and standbys use TCP).

mod bins;
mod client;
mod conf;
mod controldata;
mod files;
#[cfg(test)]
mod fuzz_tests;
mod hba;
mod logline;
mod params;
mod process;
mod restore;
mod rewind;
mod tools;

pub use bins::{MIN_SUPPORTED_MAJOR, PgBinaries};
pub use client::{LocalConn, Login, PgClient, PgState, ReplicationRow};
pub use conf::{
    MANAGED_PARAMETERS, ManagedParams, RecoverySettings, ReplConn, build_parameters,
    filter_managed, render_postgresql_conf, stolon_name, synchronous_standby_names,
    uid_from_stolon_name,
};
pub use controldata::shutdown_checkpoint;
pub use files::{
    LocalRole, TEMP_CONF_NAME, disable_alter_system, is_initialized, local_role, oldest_wal_file,
    read_timeline_history, remove_pgdata, write_passfile, write_pg_hba, write_postgresql_conf,
    write_recovery_signal, write_standby_signal, write_temp_postgresql_conf,
};
pub use hba::{AuthMethod, HbaParams, render_pg_hba};
pub use params::ServerParameters;
pub(crate) use process::kill_instance;
pub use process::{PgProcess, StartOptions, stop_stale_instance};
pub use restore::restore_base_backup;
pub use rewind::{checkpoint, pg_rewind};
pub use tools::{initdb, pg_basebackup, promote, remove_stale_secrets};

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What systemd hands the keeper's service that no PostgreSQL program may inherit: a postgres
/// built with systemd support (Debian's is) would send its own READY=1/STOPPING=1 for the
/// keeper's unit, and the watchdog and activated sockets are the keeper's.
const SERVICE_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// Our own settings (`STKEEPER_PG_SU_PASSWORD`, ...): a child has no use for them, and in
/// PostgreSQL `pg_read_file('/proc/self/environ')` would show the passwords among them.
const SETTINGS_ENV_PREFIXES: &[&str] = &["STKEEPER_", "STSENTINEL_", "STPROXY_", "STOLONCTL_"];

/// Removes from `cmd`'s environment what no child process (PostgreSQL, its tools, the fence
/// guard) may inherit from ours: the service variables and our own settings.
pub(crate) fn strip_private_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for var in SERVICE_ENV {
        cmd.env_remove(var);
    }
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|n| SETTINGS_ENV_PREFIXES.iter().any(|p| n.starts_with(p)))
        {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn without_private_env(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    strip_private_env(cmd.as_std_mut());
    cmd
}

/// The OS user and group a PostgreSQL program runs as, when it must differ from ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// A PostgreSQL data directory and who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pgdata {
    path: PathBuf,
    owner: Option<RunAs>,
}

impl Pgdata {
    /// Owned by, and run as, this process's user (the keeper).
    pub fn new(path: impl Into<PathBuf>) -> Pgdata {
        Pgdata {
            path: path.into(),
            owner: None,
        }
    }

    /// Owned by, and run as, another user: for a caller running as root.
    pub fn owned_by(path: impl Into<PathBuf>, owner: RunAs) -> Pgdata {
        Pgdata {
            path: path.into(),
            owner: Some(owner),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `None`: our own user.
    pub fn owner(&self) -> Option<RunAs> {
        self.owner
    }
}

impl std::ops::Deref for Pgdata {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Pgdata {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(
        "PostgreSQL binary {name} not found in {searched}: install PostgreSQL or pass --pg-bin-path <dir containing {name}>"
    )]
    BinaryNotFound {
        name: &'static str,
        searched: String,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {output}")]
    CommandFailed {
        program: String,
        status: String,
        output: String,
    },
    #[error("postgres exited unexpectedly: {0}")]
    ExitedUnexpectedly(String),
    #[error("{what} not done within {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to postgres at {socket}: {detail}")]
    Connect {
        socket: String,
        detail: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("query {what} failed: {detail}")]
    Query {
        what: &'static str,
        detail: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("unexpected {what}: {detail}")]
    Unexpected { what: &'static str, detail: String },
    #[error(
        "PostgreSQL {found} ({program}) is not supported: stolon needs PostgreSQL {min} or later; point --pg-bin-path at a newer installation"
    )]
    UnsupportedVersion {
        found: String,
        program: String,
        min: i32,
    },
}

impl PgError {
    pub(crate) fn query(what: &'static str, source: tokio_postgres::Error) -> PgError {
        PgError::Query {
            what,
            detail: pg_error_text(&source),
            source,
        }
    }

    pub(crate) fn connect(socket: String, source: tokio_postgres::Error) -> PgError {
        PgError::Connect {
            socket,
            detail: pg_error_text(&source),
            source,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> PgError {
        PgError::Io {
            path: path.into(),
            source,
        }
    }
}

/// tokio-postgres displays server errors as just "db error": spell out the server's message.
fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => {
            let mut text = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                text.push_str(&format!(": {s}"));
                src = s.source();
            }
            text
        }
    }
}
