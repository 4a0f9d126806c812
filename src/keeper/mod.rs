//! The keeper: manages one PostgreSQL instance, converging it to the db spec the sentinel wrote.
//!
//! [`run`] is the daemon: lock the data dir, settle the uid, stop a postgres a crashed keeper
//! left behind, then loop: read the clusterdata, observe PGDATA and the child postgres,
//! [`plan::plan`] (pure), execute the actions with `crate::postgres`, publish the KeeperInfo.
//! It loops every sleepInterval and at once on a clusterdata watch event, and fences a master
//! whose store has been unreachable too long. [`state`] holds the local files and the uid and
//! password-file rules, [`validate`] the start-up checks of the flags.
//!
//! Under systemd (the notifier in [`run`]'s `RoleContext`) the loop sends READY=1 once the
//! keeper info is published and its db (if any) converged with PostgreSQL accepting
//! connections, a STATUS= line from `status` (pure), WATCHDOG=1 while it iterates, and during
//! long steps (initdb, pg_basebackup, PostgreSQL start/stop) EXTEND_TIMEOUT_USEC with their
//! progress (`work`).

mod error;
mod exec;
mod fence;
pub mod plan;
#[cfg(test)]
mod plan_tests;
mod publish;
mod run;
pub mod setbacks;
mod settings;
pub mod state;
#[cfg(test)]
mod state_tests;
mod status;
mod uid_guard;
pub mod validate;
mod work;

pub use crate::postgres::AuthMethod;
pub use error::KeeperError;
pub use fence::{GUARD_ARG, run_guard};
pub use run::run;
pub use settings::is_valid_keeper_uid;

use crate::cluster::KeeperUid;
use std::path::PathBuf;

/// Resolved keeper settings (flags > env > file > defaults are merged by `config`).
/// Passwords are already read from files, trailing newline stripped, checked non-empty.
#[derive(Clone)]
pub struct KeeperConfig {
    pub uid: Option<KeeperUid>,
    pub data_dir: PathBuf,
    pub pg_listen_address: String,
    pub pg_advertise_address: Option<String>,
    pub pg_port: u16,
    pub pg_advertise_port: Option<u16>,
    pub pg_bin_path: Option<PathBuf>,
    /// `--pg-socket-dir`; `None`: `<data-dir>/socket`.
    pub pg_socket_dir: Option<PathBuf>,
    pub pg_repl_auth_method: AuthMethod,
    pub pg_repl_username: String,
    pub pg_repl_password: Option<String>,
    pub pg_su_auth_method: AuthMethod,
    pub pg_su_username: String,
    pub pg_su_password: Option<String>,
    /// `--pg-trust-networks`: where trust auth applies; empty = this host only.
    pub pg_trust_networks: Vec<String>,
    pub can_be_master: bool,
    /// `--priority`: preferred in elections over lower ones; 0 = never elected automatically.
    pub priority: u32,
    pub can_be_synchronous_replica: bool,
    pub disable_data_dir_locking: bool,
}

impl std::fmt::Debug for KeeperConfig {
    // Passwords never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeeperConfig")
            .field("uid", &self.uid)
            .field("data_dir", &self.data_dir)
            .field("pg_listen_address", &self.pg_listen_address)
            .field("pg_port", &self.pg_port)
            .field("pg_su_username", &self.pg_su_username)
            .field("pg_repl_username", &self.pg_repl_username)
            .finish_non_exhaustive()
    }
}
