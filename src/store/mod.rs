//! The etcd v3 store, in domain words. Key layout under
//! `P = <store-prefix>/<cluster-name>`:
//! `P/clusterdata`, `P/keepers/info/<uid>`, `P/sentinels/info/<uid>`, `P/proxies/info/<uid>`,
//! `P/sentinel-leader/<lease-hex>` (election).
//!

mod channel;
mod contact;
mod election;
mod etcd;
mod paths;
mod settings;
mod tls;

pub use contact::LastContact;
pub use election::Election;
pub use etcd::{MIN_TTL, Store};
pub(crate) use tls::normalize_endpoints;

use crate::cluster::KeeperUid;
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
    /// `--store-user` and the password read from `--store-password-file`.
    pub credentials: Option<StoreCredentials>,
}

/// An etcd user and its password (etcd's own authentication, over the same connection).
#[derive(Clone, PartialEq, Eq)]
pub struct StoreCredentials {
    pub user: String,
    pub password: String,
}

/// Without the password.
impl std::fmt::Debug for StoreCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd answered `what`, but not as its protocol promises (a watch not created, a stream
    /// closed at once, a transaction whose parts contradict each other).
    #[error("store: {what}: {detail}")]
    Unexpected { what: String, detail: String },
    /// The lease granted for a put was gone when the put arrived: etcd's clock or health is off.
    #[error(
        "store: put {key}: the new lease vanished at once; check etcd's clock and health ({detail})"
    )]
    LeaseVanished {
        key: String,
        detail: String,
        #[source]
        source: etcd_client::Error,
    },
    /// etcd, or the way to it, failed request `what`; `kind` says what that means for the
    /// caller (a NOSPACE refusal is not an unreachable store).
    #[error("store: {what}: {detail}")]
    Request {
        what: String,
        kind: RequestFailure,
        /// The cause in one line: etcd's message, the transport's chain, and what to do about
        /// it where we know (TLS flags, NOSPACE, no leader).
        detail: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("store request timed out after {0:?}")]
    Timeout(Duration),
    /// A write that got no answer in time: etcd may have applied it or not.
    #[error(
        "store: {what}: no answer within {after:?}; it may or may not have been applied (read it back before trying again)"
    )]
    OutcomeUnknown { what: String, after: Duration },
    #[error("store: bad value at {key}: {reason}")]
    BadValue { key: String, reason: String },
    #[error("store config: {0}")]
    Config(String),
}

/// What a failed store request means, from etcd's gRPC status code (and, where one code
/// covers several of etcd's errors, etcd's exact error text: rpctypes in etcd's server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFailure {
    /// The member has no raft leader (`etcdserver: no leader`, Unavailable): it is cut off from
    /// its peers or the cluster lost quorum. Requests carry etcd's `hasleader` requirement, so
    /// such a member answers at once instead of holding the request until it times out.
    NoLeader,
    /// etcd's NOSPACE alarm (`etcdserver: mvcc: database space exceeded`, ResourceExhausted):
    /// the backend reached its quota. etcd still serves reads and lease keep-alives but refuses
    /// every write (puts, transactions, lease grants) cluster-wide until an operator compacts,
    /// defragments and disarms the alarm.
    NoSpace,
    /// Any other Unavailable: the endpoint is down, unreachable or stopping; another member
    /// may answer.
    Unavailable,
    /// Anything else (permission, invalid request, TLS, ...).
    Other,
}

impl StoreError {
    /// Whether etcd refused a write because of its NOSPACE alarm: the store can still be read,
    /// and nobody (no sentinel either) can write clusterdata until it is cleared.
    pub fn is_no_space(&self) -> bool {
        matches!(
            self,
            StoreError::Request {
                kind: RequestFailure::NoSpace,
                ..
            }
        )
    }

    /// Whether the etcd member answered that it has no leader.
    pub fn is_no_leader(&self) -> bool {
        matches!(
            self,
            StoreError::Request {
                kind: RequestFailure::NoLeader,
                ..
            }
        )
    }
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
    KeeperInfo { uid: KeeperUid, deleted: bool },
    SentinelInfo { uid: String, deleted: bool },
    ProxyInfo { uid: String, deleted: bool },
    Leader,
}

// The API (etcd.rs, election.rs; every request bounded by `StoreConfig.timeout`):
//
//   Store::connect(&StoreConfig).await -> Result<Store>   (Clone, cheap; works while etcd is down)
//   store.cluster_path() -> &str;  store.timeout() -> Duration
//   store.get_cluster_data().await -> Result<Option<Versioned<ClusterData>>>  (BadValue names the key)
//   store.get_cluster_data_raw().await -> Result<Option<Versioned<Vec<u8>>>>
//   store.cas_cluster_data(&cd, expected_mod_revision).await -> Result<CasOutcome>  (0 = create-only)
//   store.cas_cluster_data_as_leader(&cd, expected_mod_revision, &Election).await -> Result<CasOutcome>
//   store.put_cluster_data(&cd).await -> Result<()>
//   store.put_{keeper,sentinel,proxy}_info(&info).await -> Result<()>   (on the process lease)
//   store.get_keepers_info() -> KeepersInfo; get_sentinels_info() -> Vec<SentinelInfo>;
//        get_proxies_info() -> ProxiesInfo   (unparsable values skipped, warned once per key)
//   store.set_lease_ttl(Duration)   (floored at MIN_TTL = 20s; before the first info put)
//   store.change_lease_ttl(Duration).await -> Result<()>  (also replaces a granted lease; not
//        for a campaigning sentinel)
//   store.last_contact() -> LastContact   (when a request last succeeded; for metrics)
//   store.lease_lost_since() -> Option<Instant>;  store.lease_id() -> Option<i64>
//   store.revoke_lease().await -> Result<()>   (clean shutdown: infos vanish now)
//   store.watch().await -> Result<mpsc::Receiver<StoreEvent>>  (ClusterData after re-establishing)
//   store.leader().await -> Result<Option<String>>
//   store.election(&candidate_uid) -> Election  (Clone): campaign().await -> Result<()>,
//        is_leader() -> bool, resign().await -> Result<()>, candidate() -> &str

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_parse() {
        assert_eq!(
            StoreBackend::parse("etcdv3").ok(),
            Some(StoreBackend::Etcdv3)
        );
        for b in ["etcd", "etcdv2", "consul", "kubernetes"] {
            let e = StoreBackend::parse(b)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert_eq!(
                e,
                format!(
                    "store config: store backend {b} is not supported by this stolon; use etcdv3"
                )
            );
        }
        let e = StoreBackend::parse("zookeeper")
            .err()
            .map(|e| e.to_string());
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
