//! The clusterdata document (formatVersion 1, as upstream): the sentinel's computed view of
//! the cluster, stored under `<prefix>/<cluster>/clusterdata`. Field names are upstream's so a
//! document written by upstream stolon loads here and the other way round.

use super::spec::{ArchiveRecoverySettings, ClusterSpec, NewConfig, PitrConfig, StandbySettings};
use super::{
    DbUid, Generation, GoDuration, KeeperUid, Time, is_false, is_zero_u16, is_zero_u64, zero_time,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const CURRENT_FORMAT_VERSION: u64 = 1;
pub const INITIAL_GENERATION: Generation = Generation::new(1);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterData {
    pub format_version: u64,
    #[serde(default = "zero_time")]
    pub change_time: Time,
    pub cluster: Cluster,
    #[serde(default)]
    pub keepers: BTreeMap<KeeperUid, Keeper>,
    #[serde(default)]
    pub dbs: BTreeMap<DbUid, Db>,
    #[serde(default)]
    pub proxy: Proxy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClusterPhase {
    #[default]
    Initializing,
    Normal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Generation::is_zero")]
    pub generation: Generation,
    #[serde(default = "zero_time")]
    pub change_time: Time,
    #[serde(default)]
    pub spec: ClusterSpec,
    #[serde(default)]
    pub status: ClusterStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    #[serde(default, skip_serializing_if = "Generation::is_zero")]
    pub current_generation: Generation,
    #[serde(default)]
    pub phase: ClusterPhase,
    /// The master db uid; `None` before the first election (upstream omits the key, and an
    /// empty string is read as none).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::empty_as_none"
    )]
    pub master: Option<DbUid>,
    /// Addition (no upstream field): the planned switchover under way, or the last one's
    /// outcome (src/cluster/switchover.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<super::Switchover>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PostgresBinaryVersion {
    #[serde(rename = "Maj", default)]
    pub maj: i32,
    #[serde(rename = "Min", default)]
    pub min: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Keeper {
    #[serde(default, skip_serializing_if = "KeeperUid::is_empty")]
    pub uid: KeeperUid,
    #[serde(default, skip_serializing_if = "Generation::is_zero")]
    pub generation: Generation,
    #[serde(default = "zero_time")]
    pub change_time: Time,
    #[serde(default)]
    pub spec: KeeperSpec,
    #[serde(default)]
    pub status: KeeperStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KeeperSpec {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeeperStatus {
    #[serde(default, skip_serializing_if = "is_false")]
    pub healthy: bool,
    #[serde(default = "zero_time")]
    pub last_healthy_time: Time,
    #[serde(rename = "bootUUID", default, skip_serializing_if = "String::is_empty")]
    pub boot_uuid: String,
    #[serde(default)]
    pub postgres_binary_version: PostgresBinaryVersion,
    #[serde(default, skip_serializing_if = "is_false")]
    pub force_fail: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_be_master: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_be_synchronous_replica: Option<bool>,
    /// The keeper's `--priority` (none: an older keeper, taken as the default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

impl KeeperStatus {
    /// Election priority: the keeper's `--priority`, 1 when it did not say.
    pub fn priority(&self) -> i64 {
        self.priority.unwrap_or(1)
    }
}

impl Default for KeeperStatus {
    fn default() -> Self {
        KeeperStatus {
            healthy: false,
            last_healthy_time: zero_time(),
            boot_uuid: String::new(),
            postgres_binary_version: PostgresBinaryVersion::default(),
            force_fail: false,
            can_be_master: None,
            can_be_synchronous_replica: None,
            priority: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DbInitMode {
    #[default]
    #[serde(alias = "")]
    None,
    New,
    Existing,
    Pitr,
    Resync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DbRole {
    /// Not decided yet: the keeper waits.
    #[default]
    #[serde(rename = "")]
    Undefined,
    Master,
    Standby,
}

impl DbRole {
    pub fn is_undefined(&self) -> bool {
        *self == DbRole::Undefined
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FollowType {
    /// Follow a db managed by a keeper of this cluster.
    #[default]
    Internal,
    /// Follow a database outside the cluster (standby cluster).
    External,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct FollowConfig {
    #[serde(rename = "type", default)]
    pub follow_type: FollowType,
    #[serde(rename = "dbuid", default, skip_serializing_if = "DbUid::is_empty")]
    pub db_uid: DbUid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_settings: Option<StandbySettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_recovery_settings: Option<ArchiveRecoverySettings>,
}

impl FollowConfig {
    pub fn internal(db_uid: &DbUid) -> Self {
        FollowConfig {
            follow_type: FollowType::Internal,
            db_uid: db_uid.clone(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Db {
    #[serde(default, skip_serializing_if = "DbUid::is_empty")]
    pub uid: DbUid,
    #[serde(default, skip_serializing_if = "Generation::is_zero")]
    pub generation: Generation,
    #[serde(default = "zero_time")]
    pub change_time: Time,
    #[serde(default)]
    pub spec: DbSpec,
    #[serde(default)]
    pub status: DbStatus,
}

impl Db {
    /// A standby streaming from `master`, a db of this cluster (not an external primary).
    pub fn is_standby_of(&self, master: &DbUid) -> bool {
        self.spec.role == DbRole::Standby
            && self
                .spec
                .follow_config
                .as_ref()
                .is_some_and(|f| f.follow_type == FollowType::Internal && f.db_uid == *master)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DbSpec {
    #[serde(
        rename = "keeperUID",
        default,
        skip_serializing_if = "KeeperUid::is_empty"
    )]
    pub keeper_uid: KeeperUid,
    #[serde(default)]
    pub request_timeout: GoDuration,
    #[serde(default, skip_serializing_if = "is_zero_u16")]
    pub max_standbys: u16,
    #[serde(default, skip_serializing_if = "is_false")]
    pub synchronous_replication: bool,
    #[serde(rename = "usePgrewind", default, skip_serializing_if = "is_false")]
    pub use_pg_rewind: bool,
    #[serde(default)]
    pub additional_wal_senders: u16,
    #[serde(default, deserialize_with = "super::null_as_default")]
    pub additional_replication_slots: Vec<String>,
    #[serde(default)]
    pub init_mode: DbInitMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_config: Option<NewConfig>,
    #[serde(
        rename = "pitrConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pitr_config: Option<PitrConfig>,
    #[serde(
        rename = "pgParameters",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "super::null_as_default"
    )]
    pub pg_parameters: BTreeMap<String, String>,
    /// `None` means the default rules, `Some(vec![])` none (as in the cluster spec).
    #[serde(rename = "pgHBA", default)]
    pub pg_hba: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "DbRole::is_undefined")]
    pub role: DbRole,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_config: Option<FollowConfig>,
    #[serde(default, deserialize_with = "super::null_as_default")]
    pub followers: Vec<DbUid>,
    #[serde(
        rename = "includePreviousConfig",
        default,
        skip_serializing_if = "is_false"
    )]
    pub include_previous_config: bool,
    #[serde(default, deserialize_with = "super::null_as_default")]
    pub synchronous_standbys: Vec<DbUid>,
    #[serde(default, deserialize_with = "super::null_as_default")]
    pub external_synchronous_standbys: Vec<String>,
    /// Addition (no upstream field): a master stopping for a planned switchover. Its keeper
    /// shuts PostgreSQL down cleanly, keeps it stopped and reports where its WAL ends
    /// (`stoppedXLogPos` in its info).
    #[serde(default, skip_serializing_if = "is_false")]
    pub switchover_stop: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TimelineHistory {
    #[serde(rename = "timelineID", default, skip_serializing_if = "is_zero_u64")]
    pub timeline_id: u64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub switch_point: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

pub fn find_timeline(history: &[TimelineHistory], id: u64) -> Option<&TimelineHistory> {
    history.iter().find(|h| h.timeline_id == id)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DbStatus {
    #[serde(default, skip_serializing_if = "is_false")]
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Generation::is_zero")]
    pub current_generation: Generation,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub listen_address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub port: String,
    /// Upstream's JSON key really is "systemdID".
    #[serde(
        rename = "systemdID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
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
    /// Standbys known to have been in sync (persisted).
    #[serde(default, deserialize_with = "super::null_as_default")]
    pub synchronous_standbys: Vec<DbUid>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub older_wal_file: String,
    /// Addition: where the WAL of a master cleanly stopped for a switchover ends (its
    /// shutdown checkpoint), as its keeper reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_x_log_pos: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Proxy {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Generation::is_zero")]
    pub generation: Generation,
    #[serde(default = "zero_time")]
    pub change_time: Time,
    #[serde(default)]
    pub spec: ProxySpec,
    #[serde(default)]
    pub status: ProxyStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    #[serde(
        rename = "masterDbUid",
        default,
        skip_serializing_if = "DbUid::is_empty"
    )]
    pub master_db_uid: DbUid,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "super::null_as_default"
    )]
    pub enabled_proxies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProxyStatus {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterDataError {
    #[error("clusterdata: {0}")]
    Json(String),
    #[error("clusterdata: unsupported formatVersion {0} (this stolon reads formatVersion 1)")]
    FormatVersion(u64),
    #[error("clusterdata: invalid cluster spec: {0}")]
    Spec(#[from] super::spec::SpecError),
}

impl ClusterData {
    /// A brand new cluster in phase initializing (stolonctl init, sentinel initial spec).
    pub fn new(cluster_uid: String, spec: ClusterSpec, now: Time) -> ClusterData {
        ClusterData {
            format_version: CURRENT_FORMAT_VERSION,
            change_time: now,
            cluster: Cluster {
                uid: cluster_uid,
                generation: INITIAL_GENERATION,
                change_time: now,
                spec,
                status: ClusterStatus {
                    current_generation: Generation::ZERO,
                    phase: ClusterPhase::Initializing,
                    master: None,
                    switchover: None,
                },
            },
            keepers: BTreeMap::new(),
            dbs: BTreeMap::new(),
            proxy: Proxy::default(),
        }
    }

    /// Parses and checks formatVersion and the spec: what every component does on read.
    pub fn from_json(text: &[u8]) -> Result<ClusterData, ClusterDataError> {
        let text = std::str::from_utf8(text)
            .map_err(|e| ClusterDataError::Json(format!("not UTF-8: {e}")))?;
        // Check the version first so a future format fails with the right message.
        let version: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ClusterDataError::Json(e.to_string()))?;
        match version.get("formatVersion").and_then(|v| v.as_u64()) {
            Some(CURRENT_FORMAT_VERSION) => {}
            Some(other) => return Err(ClusterDataError::FormatVersion(other)),
            None => return Err(ClusterDataError::Json("formatVersion missing".into())),
        }
        let cd: ClusterData = super::parse_json(text).map_err(ClusterDataError::Json)?;
        cd.cluster.spec.validate()?;
        Ok(cd)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data structures with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn master_db(&self) -> Option<&Db> {
        self.dbs.get(self.cluster.status.master.as_ref()?)
    }

    /// The db assigned to a keeper, if any.
    pub fn db_of_keeper(&self, keeper_uid: &KeeperUid) -> Option<&Db> {
        self.dbs
            .values()
            .find(|db| db.spec.keeper_uid == *keeper_uid)
    }

    /// The keeper running the current master db.
    pub fn master_keeper_uid(&self) -> Option<&KeeperUid> {
        self.master_db().map(|db| &db.spec.keeper_uid)
    }
}
