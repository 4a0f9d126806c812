//! The sentinel: watches keepers and proxies and, while leader, computes the cluster view.
//! `decide` is the pure decision (reference §4a); this module is the thin I/O loop around it.

mod decide;
mod elect;
mod events;
mod health;
mod init;
mod memory;
mod normal;
mod sync;

pub use decide::{Decision, Observed, decide};
pub use events::{Event, MasterFailure, RemovalReason, Severity};
pub use memory::{ConvergenceTimer, DbMemory, InfoSeen, Memory};
pub use sync::FAKE_STANDBY_NAME;

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct SentinelConfig {
    /// `--initial-cluster-spec`: JSON spec file used only when no clusterdata exists.
    pub initial_cluster_spec: Option<PathBuf>,
}

#[cfg(test)]
mod tests;
