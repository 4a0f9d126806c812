//! The keeper's typed errors: each is one line naming the thing and, where there is one, the fix.

use crate::cluster::KeeperUid;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error(
        "stolon-keeper must not run as root; run it as the postgres user (e.g. with runuser/systemd User=)"
    )]
    RunningAsRoot,
    #[error("invalid --uid {uid:?}: it must match ^[a-z0-9_]+$ (lower-case letters, digits, '_')")]
    InvalidUid { uid: String },
    #[error(
        "--uid {given:?} differs from the uid {saved:?} saved in {path}: start the keeper with --uid {saved} or use another --data-dir"
    )]
    UidMismatch {
        saved: KeeperUid,
        given: KeeperUid,
        path: PathBuf,
    },
    #[error("data dir {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error("cannot take exclusive lock on data dir {path}: another keeper running? ({reason})")]
    Lock { path: PathBuf, reason: String },
    #[error(
        "keeper uid {uid:?} is in use by another running keeper (its info in the store keeps being republished, bootUUID {other_boot_uuid}): give every keeper its own --uid; a data dir copied from another keeper carries its uid in {}/keeperstate, so start this one on an empty --data-dir instead",
        data_dir.display()
    )]
    UidInUse {
        uid: KeeperUid,
        other_boot_uuid: String,
        data_dir: PathBuf,
    },
    #[error("state file {path}: {reason}")]
    StateFile { path: PathBuf, reason: String },
    #[error("{0}")]
    Config(String),
    /// A promotion needs a recent info publication: the fence kills a master whose last one
    /// is older than its deadline (src/keeper/fence.rs).
    #[error(
        "not promoting: no keeper info publication reached the store for {silent:?}; retrying once one does"
    )]
    PromoteWithoutStore { silent: std::time::Duration },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Postgres(#[from] crate::postgres::PgError),
}
