//! The keeper's files in `<data-dir>`: `keeperstate`, `dbstate`, `lock`, and
//! the password-file helper the config loader uses.

use super::error::KeeperError;
use crate::cluster::{DbUid, Generation, KeeperUid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const KEEPER_STATE_FILE: &str = "keeperstate";
pub const DB_STATE_FILE: &str = "dbstate";
pub const LOCK_FILE: &str = "lock";
/// PGDATA lives below the data dir so the keeper's own files never mix with PostgreSQL's.
pub const PGDATA_DIR: &str = "postgres";

/// `keeperstate`: who this keeper is and which cluster it last saw. Field names are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KeeperState {
    #[serde(rename = "UID", default)]
    pub uid: KeeperUid,
    #[serde(rename = "ClusterUID", default)]
    pub cluster_uid: String,
}

/// `dbstate`: which db the local PGDATA holds and the db generation it last converged to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DbState {
    #[serde(rename = "UID", default)]
    pub uid: DbUid,
    /// 0 (upstream's NoGeneration) until the db converged once.
    #[serde(rename = "Generation", default)]
    pub generation: Generation,
    /// True while an init or resync is under way: found true at start, the data is half made.
    #[serde(rename = "Initializing", default)]
    pub initializing: bool,
    /// PGDATA was rewound with pg_rewind and has not received WAL from the db it follows yet.
    /// A new resync db taken while it is still set copies everything instead: the rewind did
    /// not help (the WAL the standby needs may be gone), and rewinding again would loop.
    #[serde(
        rename = "Rewound",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub rewound: bool,
    /// PostgreSQL was shut down cleanly for a switchover and its WAL ends here (the shutdown
    /// checkpoint). Such data may start again as the master (a rolled back switchover) or,
    /// unchanged, as a standby of the new master: the new master received all of it before
    /// its promotion (src/sentinel/switchover.rs). Forgotten at the next start.
    #[serde(
        rename = "SwitchoverStopXLogPos",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub switchover_stop_x_log_pos: Option<u64>,
    #[serde(
        rename = "InitPGParameters",
        default,
        deserialize_with = "null_as_empty"
    )]
    pub init_pg_parameters: BTreeMap<String, String>,
}

fn null_as_empty<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

/// The keeper's data dir and its files.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Creates the data dir (mode 0700) if missing. An existing dir keeps its mode: the operator
    /// may have set it deliberately; PostgreSQL checks PGDATA's own mode anyway.
    pub fn create(root: &Path) -> Result<DataDir, KeeperError> {
        let err = |reason: String| KeeperError::DataDir {
            path: root.to_path_buf(),
            reason,
        };
        if !root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(|e| err(format!("cannot create it: {e}")))?;
        } else if !root.is_dir() {
            return Err(err("exists but is not a directory".into()));
        }
        let root = root
            .canonicalize()
            .map_err(|e| err(format!("cannot resolve its absolute path: {e}")))?;
        Ok(DataDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn pgdata(&self) -> PathBuf {
        self.root.join(PGDATA_DIR)
    }

    pub fn keeper_state_path(&self) -> PathBuf {
        self.root.join(KEEPER_STATE_FILE)
    }

    pub fn db_state_path(&self) -> PathBuf {
        self.root.join(DB_STATE_FILE)
    }

    pub fn load_keeper_state(&self) -> Result<Option<KeeperState>, KeeperError> {
        read_json(&self.keeper_state_path())
    }

    pub fn save_keeper_state(&self, s: &KeeperState) -> Result<(), KeeperError> {
        write_json_atomic(&self.keeper_state_path(), s)
    }

    pub fn load_db_state(&self) -> Result<DbState, KeeperError> {
        Ok(read_json(&self.db_state_path())?.unwrap_or_default())
    }

    pub fn save_db_state(&self, s: &DbState) -> Result<(), KeeperError> {
        write_json_atomic(&self.db_state_path(), s)
    }

    /// Takes the exclusive lock on `<data-dir>/lock`, held until the returned guard drops.
    pub fn lock(&self) -> Result<DataDirLock, KeeperError> {
        let path = self.root.join(LOCK_FILE);
        let err = |reason: String| KeeperError::Lock {
            path: self.root.clone(),
            reason,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
        let flock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| err(errno.desc().to_string()))?;
        Ok(DataDirLock { _flock: flock })
    }
}

/// Holds the data-dir lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct DataDirLock {
    _flock: nix::fcntl::Flock<File>,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, KeeperError> {
    let err = |reason: String| KeeperError::StateFile {
        path: path.to_path_buf(),
        reason,
    };
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("cannot read it: {e}"))),
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| err(format!("invalid JSON ({e}); fix or remove the file")))
}

/// Writes `path` so a crash leaves either the old or the new content, never a torn file:
/// temp file (0600) in the same dir, fsync, rename, fsync the dir.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), KeeperError> {
    let bytes = serde_json::to_vec(value).map_err(|e| KeeperError::StateFile {
        path: path.to_path_buf(),
        reason: format!("cannot serialize: {e}"),
    })?;
    write_file_atomic(path, &bytes)
}

pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeeperError> {
    crate::fsutil::write_atomic(path, bytes, None).map_err(|e| KeeperError::StateFile {
        path: path.to_path_buf(),
        reason: format!("cannot write it: {e}"),
    })
}

/// `^[a-z0-9_]+$`: the uid ends up in store keys and PostgreSQL names.
pub fn validate_uid(uid: &str) -> Result<(), KeeperError> {
    let ok = !uid.is_empty()
        && uid
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(KeeperError::InvalidUid {
            uid: uid.to_string(),
        })
    }
}

/// Decides the keeper uid: the persisted one, else `--uid`, else a new random one; persists it.
/// A `--uid` different from the persisted one is refused: the data belongs to another keeper.
pub fn resolve_uid(dir: &DataDir, flag: Option<&KeeperUid>) -> Result<KeeperState, KeeperError> {
    if let Some(uid) = flag {
        validate_uid(uid.as_str())?;
    }
    let saved = dir.load_keeper_state()?;
    match (saved, flag) {
        (Some(s), Some(given)) if !s.uid.is_empty() && s.uid != *given => {
            Err(KeeperError::UidMismatch {
                saved: s.uid,
                given: given.clone(),
                path: dir.keeper_state_path(),
            })
        }
        (Some(s), _) if !s.uid.is_empty() => Ok(s),
        (saved, flag) => {
            let uid = match flag {
                Some(u) => u.clone(),
                None => {
                    let u = KeeperUid::from(crate::cluster::new_uid());
                    tracing::info!(uid = %u, "uid generated");
                    u
                }
            };
            let state = KeeperState {
                uid,
                cluster_uid: saved.map(|s| s.cluster_uid).unwrap_or_default(),
            };
            dir.save_keeper_state(&state)?;
            Ok(state)
        }
    }
}
