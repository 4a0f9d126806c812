//! The etcd v3 store, in domain words (reference §3.1). Key layout under
//! `P = <store-prefix>/<cluster-name>`:
//! `P/clusterdata`, `P/keepers/info/<uid>`, `P/sentinels/info/<uid>`, `P/proxies/info/<uid>`,
//! `P/sentinel-leader/<lease-hex>` (election).
//!
//! OWNER: store helper. The API below is the contract the roles code against; keep it stable.

mod election;
mod etcd;
mod paths;
mod tls;

pub use election::Election;
pub use etcd::{MIN_TTL, Store};

use std::path::PathBuf;
use std::time::Duration;

/// `--store-endpoints` default.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:2379";

/// `--store-backend`: only etcdv3 is implemented; the others are recognised so the error can say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    Etcdv3,
}

impl StoreBackend {
    /// Parses `--store-backend`. Upstream's other backends are named in the error so a user
    /// migrating a config knows it is a deliberate gap, not a typo.
    pub fn parse(name: &str) -> Result<StoreBackend, StoreError> {
        match name.trim() {
            "etcdv3" => Ok(StoreBackend::Etcdv3),
            b @ ("etcd" | "etcdv2" | "consul" | "kubernetes") => Err(StoreError::Config(format!(
                "store backend {b} is not supported by this stolon; use etcdv3"
            ))),
            other => Err(StoreError::Config(format!(
                "unknown store backend {other:?}; use etcdv3"
            ))),
        }
    }
}

impl StoreConfig {
    /// Splits the comma-separated `--store-endpoints`; a schemeless endpoint means `http://`.
    /// Empty means the default local etcd. Mixed schemes are rejected later by `Store::connect`.
    pub fn endpoints_from_flag(flag: &str) -> Vec<String> {
        let endpoints: Vec<String> = flag
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.to_string()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        if endpoints.is_empty() {
            vec![DEFAULT_ENDPOINT.to_string()]
        } else {
            endpoints
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// Parsed `--store-endpoints`; default `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// `--store-timeout`: per-request timeout.
    pub timeout: Duration,
    /// `--store-prefix`, kept exactly as given (etcd v3 is a flat namespace).
    pub prefix: String,
    pub cluster_name: String,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub skip_tls_verify: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Etcd(String),
    #[error("store request timed out after {0:?}")]
    Timeout(Duration),
    #[error("store: bad value at {key}: {reason}")]
    BadValue { key: String, reason: String },
    #[error("store config: {0}")]
    Config(String),
}

/// A value read from the store together with the revision a compare-and-swap must match.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub value: T,
    pub mod_revision: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    Written {
        mod_revision: i64,
    },
    /// Someone else wrote first; re-read and decide again.
    Conflict,
}

/// What changed under the cluster path (a watch event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    ClusterData,
    KeeperInfo { uid: String, deleted: bool },
    SentinelInfo { uid: String, deleted: bool },
    ProxyInfo { uid: String, deleted: bool },
    Leader,
}

// The `Store` handle (in etcd.rs, re-exported here) offers, as async methods:
//
//   Store::connect(&StoreConfig) -> Result<Store, StoreError>         (Clone; cheap to clone)
//   store.cluster_path() -> &str                                        ("<prefix>/<cluster>")
//   store.get_cluster_data() -> Result<Option<Versioned<ClusterData>>>  (BadValue on bad JSON/format/spec)
//   store.get_cluster_data_raw() -> Result<Option<Versioned<Vec<u8>>>>
//   store.cas_cluster_data(&cd, expected_mod_revision: i64) -> Result<CasOutcome>  (0 = create-only)
//   store.cas_cluster_data_as_leader(&cd, expected_mod_revision, &Election) -> Result<CasOutcome>
//        (the txn also requires our leader key to still exist: a deposed sentinel cannot write)
//   store.put_cluster_data(&cd) -> Result<()>                           (plain put: init, clusterdata write)
//   store.put_keeper_info(&KeeperInfo) / get_keepers_info() -> KeepersInfo
//   store.put_sentinel_info(&SentinelInfo) / get_sentinels_info() -> Vec<SentinelInfo>
//   store.put_proxy_info(&ProxyInfo) / get_proxies_info() -> ProxiesInfo
//        (info keys are attached to the one lease this process holds, with keep-alive)
//   store.set_lease_ttl(Duration)     (TTL of this process's lease, floored at 20s)
//   store.lease_lost_since() -> Option<Instant>   (for self-fencing: when keep-alive last failed)
//   store.watch() -> Result<mpsc::Receiver<StoreEvent>>  (re-establishes itself; after a reconnect
//        it sends StoreEvent::ClusterData so the receiver re-reads everything)
//   store.leader() -> Result<Option<String>>     (uid of the leader sentinel)
//   store.election(candidate_uid) -> Election;  election.campaign().await (returns once leader),
//        election.is_leader(), election.resign().await

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_parse() {
        assert_eq!(StoreBackend::parse("etcdv3").ok(), Some(StoreBackend::Etcdv3));
        for b in ["etcd", "etcdv2", "consul", "kubernetes"] {
            let e = StoreBackend::parse(b).err().map(|e| e.to_string()).unwrap_or_default();
            assert_eq!(
                e,
                format!("store config: store backend {b} is not supported by this stolon; use etcdv3")
            );
        }
        let e = StoreBackend::parse("zookeeper").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("unknown store backend")));
    }

    #[test]
    fn endpoints_flag() {
        assert_eq!(StoreConfig::endpoints_from_flag(""), vec![DEFAULT_ENDPOINT]);
        assert_eq!(
            StoreConfig::endpoints_from_flag(" 10.0.0.1:2379, https://e2:2379 ,"),
            vec!["http://10.0.0.1:2379", "https://e2:2379"]
        );
    }
}
