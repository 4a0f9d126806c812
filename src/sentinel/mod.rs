//! The sentinel: watches keepers and proxies and, while leader, computes the cluster view.
//! OWNER: sentinel helper.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct SentinelConfig {
    /// `--initial-cluster-spec`: JSON spec file used only when no clusterdata exists.
    pub initial_cluster_spec: Option<PathBuf>,
}
