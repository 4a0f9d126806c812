//! What each running process publishes about itself under `<prefix>/<cluster>/{keepers,sentinels,
//! proxies}/info/<uid>` with a TTL (upstream's layout).

use super::data::{PostgresBinaryVersion, TimelineHistory};
use super::{DbUid, Generation, KeeperUid, is_false, is_zero_u64};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct KeeperInfo {
    /// New on every publish, so the sentinel can tell a live keeper from a stale key.
    #[serde(rename = "infoUID", default, skip_serializing_if = "String::is_empty")]
    pub info_uid: String,
    #[serde(default, skip_serializing_if = "KeeperUid::is_empty")]
    pub uid: KeeperUid,
    #[serde(
        rename = "clusterUID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cluster_uid: String,
    /// New for every keeper process: lets the sentinel notice a restart.
    #[serde(rename = "bootUUID", default, skip_serializing_if = "String::is_empty")]
    pub boot_uuid: String,
    #[serde(default)]
    pub postgres_binary_version: PostgresBinaryVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_state: Option<PostgresState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_be_master: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_be_synchronous_replica: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PostgresState {
    /// The db uid this instance holds.
    #[serde(default, skip_serializing_if = "DbUid::is_empty")]
    pub uid: DbUid,
    #[serde(default, skip_serializing_if = "Generation::is_zero")]
    pub generation: Generation,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub listen_address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub port: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub healthy: bool,
    #[serde(rename = "systemID", default, skip_serializing_if = "String::is_empty")]
    pub system_id: String,
    #[serde(rename = "timelineID", default, skip_serializing_if = "is_zero_u64")]
    pub timeline_id: u64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub x_log_pos: u64,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "super::null_as_default"
    )]
    pub timelines_history: Vec<TimelineHistory>,
    #[serde(
        rename = "pgParameters",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "super::null_as_default"
    )]
    pub pg_parameters: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "super::null_as_default")]
    pub synchronous_standbys: Vec<DbUid>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub older_wal_file: String,
    /// Addition: PostgreSQL was shut down cleanly for a switchover and its WAL ends here
    /// (the shutdown checkpoint's location).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_x_log_pos: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SentinelInfo {
    #[serde(rename = "UID")]
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProxyInfo {
    #[serde(rename = "infoUID", default, skip_serializing_if = "String::is_empty")]
    pub info_uid: String,
    #[serde(rename = "UID", default)]
    pub uid: String,
    /// The proxy generation this proxy has applied (it closed connections for it).
    #[serde(rename = "Generation", default)]
    pub generation: Generation,
    /// Nanoseconds, as Go's time.Duration marshals.
    #[serde(rename = "ProxyTimeout", default)]
    pub proxy_timeout_ns: i64,
    /// Ours: this proxy also takes read-only clients (`--read-only-port`, or a socket named
    /// `read-only` passed by systemd) and sends them to standbys. Absent when false, so the
    /// JSON of a proxy without one is upstream's.
    #[serde(rename = "readOnly", default, skip_serializing_if = "super::is_false")]
    pub read_only: bool,
}

pub type KeepersInfo = BTreeMap<KeeperUid, KeeperInfo>;
pub type ProxiesInfo = BTreeMap<String, ProxyInfo>;
