//! The cluster specification: what the operator asks for. Every field is optional
//! in storage, exactly as upstream stores it; defaults are computed on read and never written back.

use super::duration::GoDuration;
use super::ids::KeeperUid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const DEFAULT_SLEEP_INTERVAL: GoDuration = GoDuration::from_secs(5);
pub const DEFAULT_REQUEST_TIMEOUT: GoDuration = GoDuration::from_secs(10);
pub const DEFAULT_CONVERGENCE_TIMEOUT: GoDuration = GoDuration::from_secs(30);
pub const DEFAULT_INIT_TIMEOUT: GoDuration = GoDuration::from_secs(5 * 60);
pub const DEFAULT_SYNC_TIMEOUT: GoDuration = GoDuration::ZERO;
pub const DEFAULT_DB_WAIT_READY_TIMEOUT: GoDuration = GoDuration::from_secs(60);
pub const DEFAULT_FAIL_INTERVAL: GoDuration = GoDuration::from_secs(20);
pub const DEFAULT_DEAD_KEEPER_REMOVAL_INTERVAL: GoDuration = GoDuration::from_secs(48 * 3600);
pub const DEFAULT_PROXY_CHECK_INTERVAL: GoDuration = GoDuration::from_secs(5);
pub const DEFAULT_PROXY_TIMEOUT: GoDuration = GoDuration::from_secs(15);
pub const DEFAULT_MAX_STANDBYS: u16 = 20;
pub const DEFAULT_MAX_STANDBYS_PER_SENDER: u16 = 3;
/// ⚠ Upstream's constant is `1024 * 1204` (a typo for 1 MiB). We keep the exact value so a
/// migrated cluster elects exactly as before; the docs say "about 1.2 MB".
pub const DEFAULT_MAX_STANDBY_LAG: u32 = 1024 * 1204;
pub const DEFAULT_MIN_SYNCHRONOUS_STANDBYS: u16 = 1;
pub const DEFAULT_MAX_SYNCHRONOUS_STANDBYS: u16 = 1;
pub const DEFAULT_ADDITIONAL_WAL_SENDERS: u16 = 5;
/// `max_slot_wal_keep_size` when the spec sets none (addition; upstream leaves PostgreSQL's -1,
/// so the slot of a dead standby keeps every WAL segment until the disk fills). 10 GB lets a
/// standby that is down for a few hours of moderate writes resume from its slot, and bounds
/// what one lost standby can cost the master's disk.
pub const DEFAULT_MAX_SLOT_WAL_KEEP_SIZE: &str = "10GB";
/// Consecutive checks with an unchanged xLogPos before a standby is judged unable to sync.
pub const DB_NOT_INCREASING_XLOGPOS_TIMES: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterInitMode {
    New,
    Existing,
    Pitr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClusterRole {
    #[default]
    Master,
    Standby,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SuReplAccessMode {
    #[default]
    All,
    Strict,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NewConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locale: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub encoding: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub data_checksums: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PitrConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data_restore_command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_recovery_settings: Option<ArchiveRecoverySettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_target_settings: Option<RecoveryTargetSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExistingConfig {
    #[serde(
        rename = "keeperUID",
        default,
        skip_serializing_if = "KeeperUid::is_empty"
    )]
    pub keeper_uid: KeeperUid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StandbyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_settings: Option<StandbySettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_recovery_settings: Option<ArchiveRecoverySettings>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveRecoverySettings {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restore_command: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryTargetSettings {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recovery_target: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recovery_target_lsn: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recovery_target_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recovery_target_time: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recovery_target_xid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recovery_target_timeline: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StandbySettings {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub primary_conninfo: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub primary_slot_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recovery_min_apply_delay: String,
}

/// Parameters the keeper owns: ignored when they appear in the spec and left out of the
/// parameters it reports (so `mergePgParameters` never copies them into the spec).
/// Names starting with `recovery_target` are managed as well.
pub const MANAGED_PARAMETERS: &[&str] = &[
    "unix_socket_directories",
    "wal_keep_segments",
    "wal_keep_size",
    "max_slot_wal_keep_size",
    "wal_retrieve_retry_interval",
    "hot_standby",
    "listen_addresses",
    "port",
    "max_replication_slots",
    "max_wal_senders",
    "wal_log_hints",
    "synchronous_standby_names",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_min_apply_delay",
    "restore_command",
    "recovery_target_action",
];

/// Whether the keeper sets `name` itself (see [`MANAGED_PARAMETERS`]).
pub fn is_managed_parameter(name: &str) -> bool {
    MANAGED_PARAMETERS.contains(&name) || name.starts_with("recovery_target")
}

/// `[A-Za-z_][A-Za-z0-9_$]*`, or `prefix.name` of two such (an extension's parameter).
pub fn is_parameter_name(name: &str) -> bool {
    let is_ident = |s: &str| {
        s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    };
    match name.split_once('.') {
        Some((prefix, rest)) => is_ident(prefix) && is_ident(rest),
        None => is_ident(name),
    }
}

/// A value postgresql.conf can hold on one line: no control character.
pub fn is_parameter_value(value: &str) -> bool {
    !value.chars().any(char::is_control)
}

/// A pgParameters entry PostgreSQL's configuration file can hold as one line: the name is a
/// parameter name (`[A-Za-z_][A-Za-z0-9_$]*`, or `prefix.name` for an extension's), the value has
/// no control character. Anything else would let one entry write further lines into
/// postgresql.conf, after the ones the keeper manages.
fn check_parameter(name: &str, value: &str) -> Result<(), SpecError> {
    if !is_parameter_name(name) {
        return Err(spec_err(format!(
            "pgParameters: {name:?} is not a PostgreSQL parameter name"
        )));
    }
    if !is_parameter_value(value) {
        return Err(spec_err(format!(
            "pgParameters: the value of {name:?} contains a control character"
        )));
    }
    Ok(())
}

/// With the password of `primary_conninfo` hidden: actions holding these settings are logged.
impl std::fmt::Debug for StandbySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandbySettings")
            .field("primary_conninfo", &redact_conninfo(&self.primary_conninfo))
            .field("primary_slot_name", &self.primary_slot_name)
            .field("recovery_min_apply_delay", &self.recovery_min_apply_delay)
            .finish()
    }
}

/// A libpq connection string with its password replaced by `***`, in either form: key/value
/// (`password=secret`, `password = 'a b\'c'`) or URI (`postgresql://user:secret@host`,
/// `?password=secret`).
pub fn redact_conninfo(conninfo: &str) -> String {
    let mut out = String::with_capacity(conninfo.len());
    let mut rest = conninfo;
    // URI userinfo: between "://" and the next "@" (before any "/"), after the first ":".
    if let Some(scheme_end) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme_end + 3);
        let authority_end = tail.find(['/', '?']).unwrap_or(tail.len());
        if let Some(at) = tail[..authority_end].rfind('@')
            && let Some(colon) = tail[..at].find(':')
        {
            out.push_str(head);
            out.push_str(&tail[..=colon]);
            out.push_str("***");
            rest = &tail[at..];
        }
    }
    while let Some(at) = find_password_key(rest) {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        let eq = after.find('=').map_or(after.len(), |i| i + 1);
        let value = after[eq..].trim_start();
        out.push_str(&after[..after.len() - value.len()]);
        out.push_str("***");
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            let mut escaped = false;
            let end = quoted
                .char_indices()
                .find(|&(_, c)| {
                    let closes = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    closes
                })
                .map_or(quoted.len(), |(i, _)| i + 1);
            end + 1
        } else {
            value.find([' ', '&', '\t', '\n']).unwrap_or(value.len())
        };
        rest = &value[value_len.min(value.len())..];
    }
    out.push_str(rest);
    out
}

/// Where a `password` key starts: at the start, after whitespace, or after `?`/`&` (URI query).
fn find_password_key(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find("password") {
        let at = from + i;
        let starts_key = at == 0 || s[..at].ends_with([' ', '\t', '\n', '?', '&']);
        let next = s[at + "password".len()..].trim_start();
        if starts_key && next.starts_with('=') {
            return Some(at);
        }
        from = at + "password".len();
    }
    None
}

/// The stored spec. `None` means "use the default"; `stolonctl spec` prints only what is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convergence_timeout: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_timeout: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_timeout: Option<GoDuration>,
    #[serde(
        rename = "dbWaitReadyTimeout",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub db_wait_ready_timeout: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_keeper_removal_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_check_interval: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_timeout: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_standbys: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_standbys_per_sender: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_standby_lag: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_replication: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_synchronous_standbys: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_synchronous_standbys: Option<u16>,
    /// Upstream has no omitempty here, so it may be stored as `null`.
    #[serde(default)]
    pub additional_wal_senders: Option<u16>,
    #[serde(default)]
    pub additional_master_replication_slots: Option<Vec<String>>,
    #[serde(
        rename = "usePgrewind",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub use_pg_rewind: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_mode: Option<ClusterInitMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_pg_parameters: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<ClusterRole>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_config: Option<NewConfig>,
    #[serde(
        rename = "pitrConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pitr_config: Option<PitrConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_config: Option<ExistingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_config: Option<StandbyConfig>,
    #[serde(
        rename = "defaultSUReplAccessMode",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub default_su_repl_access_mode: Option<SuReplAccessMode>,
    #[serde(
        rename = "pgParameters",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pg_parameters: Option<BTreeMap<String, String>>,
    /// `None` (JSON null) means the default rules; `Some(vec![])` means none at all.
    #[serde(rename = "pgHBA", default)]
    pub pg_hba: Option<Vec<String>>,
    #[serde(default)]
    pub automatic_pg_restart: Option<bool>,
    /// Addition (no upstream field): `max_slot_wal_keep_size` of every db, PostgreSQL ≥ 13.
    /// A size in PostgreSQL's notation (`10GB`, `512MB`, a bare number of MB) or `-1`
    /// (unbounded). Wins over a `max_slot_wal_keep_size` in pgParameters, which still applies
    /// when this is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_slot_wal_keep_size: Option<String>,
    /// Addition (no upstream field): maintenance mode (`stolonctl pause`/`resume`). While
    /// true the sentinel keeps the health status current but makes no failover and no
    /// change to the set of standbys (src/sentinel/normal.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// One line naming the field and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn spec_err(msg: impl Into<String>) -> SpecError {
    SpecError(msg.into())
}

/// Names usable as replication slots and keeper uids: PostgreSQL's slot name rule.
pub fn is_valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

pub const STOLON_PREFIX: &str = "stolon_";

/// The PostgreSQL parameter [`ClusterSpec::max_slot_wal_keep_size`] sets.
pub const MAX_SLOT_WAL_KEEP_SIZE: &str = "max_slot_wal_keep_size";

/// A `max_slot_wal_keep_size` value in MB (`-1`: no limit), as PostgreSQL reads it: an integer
/// with an optional unit `MB`, `GB` or `TB` (none means MB), at most `i32::MAX` MB.
pub fn parse_wal_keep_size_mb(value: &str) -> Result<i64, String> {
    let v = value.trim();
    if v == "-1" {
        return Ok(-1);
    }
    let digits = v.chars().take_while(|c| c.is_ascii_digit()).count();
    let (number, unit) = v.split_at(digits);
    let number: i64 = number
        .parse()
        .map_err(|_| "not a non-negative whole number with an optional unit".to_string())?;
    let factor = match unit.trim() {
        "" | "MB" => 1,
        "GB" => 1024,
        "TB" => 1024 * 1024,
        other => return Err(format!("unknown unit {other:?} (use MB, GB or TB)")),
    };
    number
        .checked_mul(factor)
        .filter(|mb| *mb <= i64::from(i32::MAX))
        .ok_or_else(|| format!("too large (at most {} MB)", i32::MAX))
}

impl ClusterSpec {
    pub fn sleep_interval(&self) -> GoDuration {
        self.sleep_interval.unwrap_or(DEFAULT_SLEEP_INTERVAL)
    }
    pub fn request_timeout(&self) -> GoDuration {
        self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT)
    }
    pub fn convergence_timeout(&self) -> GoDuration {
        self.convergence_timeout
            .unwrap_or(DEFAULT_CONVERGENCE_TIMEOUT)
    }
    pub fn init_timeout(&self) -> GoDuration {
        self.init_timeout.unwrap_or(DEFAULT_INIT_TIMEOUT)
    }
    pub fn sync_timeout(&self) -> GoDuration {
        self.sync_timeout.unwrap_or(DEFAULT_SYNC_TIMEOUT)
    }
    pub fn db_wait_ready_timeout(&self) -> GoDuration {
        self.db_wait_ready_timeout
            .unwrap_or(DEFAULT_DB_WAIT_READY_TIMEOUT)
    }
    pub fn fail_interval(&self) -> GoDuration {
        self.fail_interval.unwrap_or(DEFAULT_FAIL_INTERVAL)
    }
    pub fn dead_keeper_removal_interval(&self) -> GoDuration {
        self.dead_keeper_removal_interval
            .unwrap_or(DEFAULT_DEAD_KEEPER_REMOVAL_INTERVAL)
    }
    pub fn proxy_check_interval(&self) -> GoDuration {
        self.proxy_check_interval
            .unwrap_or(DEFAULT_PROXY_CHECK_INTERVAL)
    }
    pub fn proxy_timeout(&self) -> GoDuration {
        self.proxy_timeout.unwrap_or(DEFAULT_PROXY_TIMEOUT)
    }
    pub fn max_standbys(&self) -> u16 {
        self.max_standbys.unwrap_or(DEFAULT_MAX_STANDBYS)
    }
    pub fn max_standbys_per_sender(&self) -> u16 {
        self.max_standbys_per_sender
            .unwrap_or(DEFAULT_MAX_STANDBYS_PER_SENDER)
    }
    pub fn max_standby_lag(&self) -> u32 {
        self.max_standby_lag.unwrap_or(DEFAULT_MAX_STANDBY_LAG)
    }
    pub fn synchronous_replication(&self) -> bool {
        self.synchronous_replication.unwrap_or(false)
    }
    pub fn min_synchronous_standbys(&self) -> u16 {
        self.min_synchronous_standbys
            .unwrap_or(DEFAULT_MIN_SYNCHRONOUS_STANDBYS)
    }
    pub fn max_synchronous_standbys(&self) -> u16 {
        self.max_synchronous_standbys
            .unwrap_or(DEFAULT_MAX_SYNCHRONOUS_STANDBYS)
    }
    pub fn additional_wal_senders(&self) -> u16 {
        self.additional_wal_senders
            .unwrap_or(DEFAULT_ADDITIONAL_WAL_SENDERS)
    }
    pub fn additional_master_replication_slots(&self) -> &[String] {
        self.additional_master_replication_slots
            .as_deref()
            .unwrap_or(&[])
    }
    pub fn use_pg_rewind(&self) -> bool {
        self.use_pg_rewind.unwrap_or(false)
    }
    pub fn merge_pg_parameters(&self) -> bool {
        self.merge_pg_parameters.unwrap_or(true)
    }
    pub fn role(&self) -> ClusterRole {
        self.role.unwrap_or_default()
    }
    pub fn default_su_repl_access_mode(&self) -> SuReplAccessMode {
        self.default_su_repl_access_mode.unwrap_or_default()
    }
    pub fn automatic_pg_restart(&self) -> bool {
        self.automatic_pg_restart.unwrap_or(false)
    }
    pub fn paused(&self) -> bool {
        self.paused.unwrap_or(false)
    }
    pub fn pg_parameters(&self) -> BTreeMap<String, String> {
        self.pg_parameters.clone().unwrap_or_default()
    }
    /// The `max_slot_wal_keep_size` to render: this field, else pgParameters' value, else
    /// [`DEFAULT_MAX_SLOT_WAL_KEEP_SIZE`].
    pub fn max_slot_wal_keep_size(&self) -> String {
        self.max_slot_wal_keep_size
            .clone()
            .or_else(|| {
                self.pg_parameters
                    .as_ref()
                    .and_then(|p| p.get(MAX_SLOT_WAL_KEEP_SIZE).cloned())
            })
            .unwrap_or_else(|| DEFAULT_MAX_SLOT_WAL_KEEP_SIZE.to_string())
    }

    /// The spec with every unset field filled with its default (`stolonctl spec --defaults`).
    pub fn with_defaults(&self) -> ClusterSpec {
        ClusterSpec {
            sleep_interval: Some(self.sleep_interval()),
            request_timeout: Some(self.request_timeout()),
            convergence_timeout: Some(self.convergence_timeout()),
            init_timeout: Some(self.init_timeout()),
            sync_timeout: Some(self.sync_timeout()),
            db_wait_ready_timeout: Some(self.db_wait_ready_timeout()),
            fail_interval: Some(self.fail_interval()),
            dead_keeper_removal_interval: Some(self.dead_keeper_removal_interval()),
            proxy_check_interval: Some(self.proxy_check_interval()),
            proxy_timeout: Some(self.proxy_timeout()),
            max_standbys: Some(self.max_standbys()),
            max_standbys_per_sender: Some(self.max_standbys_per_sender()),
            max_standby_lag: Some(self.max_standby_lag()),
            synchronous_replication: Some(self.synchronous_replication()),
            min_synchronous_standbys: Some(self.min_synchronous_standbys()),
            max_synchronous_standbys: Some(self.max_synchronous_standbys()),
            additional_wal_senders: Some(self.additional_wal_senders()),
            additional_master_replication_slots: self.additional_master_replication_slots.clone(),
            use_pg_rewind: Some(self.use_pg_rewind()),
            init_mode: self.init_mode,
            merge_pg_parameters: Some(self.merge_pg_parameters()),
            role: Some(self.role()),
            new_config: self.new_config.clone(),
            pitr_config: self.pitr_config.clone(),
            existing_config: self.existing_config.clone(),
            standby_config: self.standby_config.clone(),
            default_su_repl_access_mode: Some(self.default_su_repl_access_mode()),
            pg_parameters: self.pg_parameters.clone(),
            pg_hba: self.pg_hba.clone(),
            automatic_pg_restart: Some(self.automatic_pg_restart()),
            max_slot_wal_keep_size: Some(self.max_slot_wal_keep_size()),
            paused: Some(self.paused()),
        }
    }

    /// Upstream's rules (same messages), plus a zero sleepInterval/proxyCheckInterval rejected:
    /// upstream accepts them and then spins in a busy loop.
    pub fn validate(&self) -> Result<(), SpecError> {
        let durations = [
            ("sleepInterval", self.sleep_interval()),
            ("requestTimeout", self.request_timeout()),
            ("convergenceTimeout", self.convergence_timeout()),
            ("initTimeout", self.init_timeout()),
            ("syncTimeout", self.sync_timeout()),
            ("dbWaitReadyTimeout", self.db_wait_ready_timeout()),
            ("failInterval", self.fail_interval()),
            (
                "deadKeeperRemovalInterval",
                self.dead_keeper_removal_interval(),
            ),
            ("proxyCheckInterval", self.proxy_check_interval()),
            ("proxyTimeout", self.proxy_timeout()),
        ];
        for (name, value) in durations {
            if value.is_negative() {
                return Err(spec_err(format!("{name} must be positive (got {value})")));
            }
        }
        for (name, value) in [
            ("sleepInterval", self.sleep_interval()),
            ("proxyCheckInterval", self.proxy_check_interval()),
        ] {
            if value.is_zero() {
                return Err(spec_err(format!("{name} must be greater than 0")));
            }
        }
        if self.proxy_check_interval() >= self.proxy_timeout() {
            return Err(spec_err(format!(
                "proxyCheckInterval ({}) should be less than proxyTimeout ({})",
                self.proxy_check_interval(),
                self.proxy_timeout()
            )));
        }
        for (name, value) in [
            ("maxStandbys", self.max_standbys()),
            ("maxStandbysPerSender", self.max_standbys_per_sender()),
            ("maxSynchronousStandbys", self.max_synchronous_standbys()),
        ] {
            if value < 1 {
                return Err(spec_err(format!("{name} must be at least 1")));
            }
        }
        if self.max_synchronous_standbys() < self.min_synchronous_standbys() {
            return Err(spec_err(
                "maxSynchronousStandbys must be greater or equal to minSynchronousStandbys",
            ));
        }
        let Some(init_mode) = self.init_mode else {
            return Err(spec_err(
                "initMode undefined (one of \"new\", \"existing\", \"pitr\")",
            ));
        };
        for slot in self.additional_master_replication_slots() {
            if !is_valid_slot_name(slot) {
                return Err(spec_err(format!(
                    "additionalMasterReplicationSlots: wrong replication slot name: {slot:?} (only a-z, 0-9 and _)"
                )));
            }
            if slot.starts_with(STOLON_PREFIX) {
                return Err(spec_err(format!(
                    "additionalMasterReplicationSlots: replication slot name is reserved: {slot:?}"
                )));
            }
        }
        if let Some(size) = &self.max_slot_wal_keep_size {
            parse_wal_keep_size_mb(size).map_err(|why| {
                spec_err(format!(
                    "maxSlotWalKeepSize {size:?}: {why} (e.g. \"10GB\", \"512MB\", or -1 for no limit)"
                ))
            })?;
        }
        for (name, value) in self.pg_parameters.iter().flatten() {
            check_parameter(name, value)?;
        }
        for line in self.pg_hba.iter().flatten() {
            if line.contains('\n') || line.contains('\r') {
                return Err(spec_err(format!(
                    "pgHBA entries cannot contain newline characters: {line:?}"
                )));
            }
        }
        let role = self.role();
        match init_mode {
            ClusterInitMode::New => {
                if role == ClusterRole::Standby {
                    return Err(spec_err(
                        "invalid cluster role standby when initMode is \"new\"",
                    ));
                }
            }
            ClusterInitMode::Existing if role == ClusterRole::Standby => {
                // ⚠ Upstream accepts it and adopts the data as a master. A standby cluster's
                // head is made from the primary: pitr with a dataRestoreCommand such as
                // pg_basebackup (README, Standby clusters).
                return Err(spec_err(
                    "invalid cluster role standby when initMode is \"existing\": create a standby cluster with initMode \"pitr\" (e.g. a dataRestoreCommand running pg_basebackup from the primary)",
                ));
            }
            ClusterInitMode::Existing => match &self.existing_config {
                None => {
                    return Err(spec_err(
                        "existingConfig undefined. Required when initMode is \"existing\"",
                    ));
                }
                Some(c) if c.keeper_uid.is_empty() => {
                    return Err(spec_err("existingConfig.keeperUID undefined"));
                }
                Some(_) => {}
            },
            ClusterInitMode::Pitr => match &self.pitr_config {
                None => {
                    return Err(spec_err(
                        "pitrConfig undefined. Required when initMode is \"pitr\"",
                    ));
                }
                Some(c) if c.data_restore_command.is_empty() => {
                    return Err(spec_err("pitrConfig.dataRestoreCommand undefined"));
                }
                Some(c) if c.recovery_target_settings.is_some() && role == ClusterRole::Standby => {
                    return Err(spec_err(
                        "cannot define pitrConfig.recoveryTargetSettings when required cluster role is standby",
                    ));
                }
                Some(_) => {}
            },
        }
        if role == ClusterRole::Standby && self.standby_config.is_none() {
            return Err(spec_err(
                "standbyConfig undefined. Required when cluster role is \"standby\"",
            ));
        }
        Ok(())
    }

    /// Checks that `new` may replace `self` (stolonctl update).
    pub fn check_update(&self, new: &ClusterSpec) -> Result<(), SpecError> {
        new.check_input()
            .map_err(|e| spec_err(format!("invalid cluster spec: {e}")))?;
        if self.init_mode != new.init_mode {
            return Err(spec_err("initMode: cannot change cluster init mode"));
        }
        if self.role() == ClusterRole::Master && new.role() == ClusterRole::Standby {
            return Err(spec_err(
                "role: cannot update a cluster from master role to standby role",
            ));
        }
        Ok(())
    }

    /// Parses a spec from JSON; the error names the offending field path.
    pub fn from_json(text: &str) -> Result<ClusterSpec, SpecError> {
        super::parse_json(text).map_err(SpecError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_parameters_cannot_write_extra_lines() {
        let spec = |params: &str| {
            ClusterSpec::from_json(&format!(r#"{{"initMode":"new","pgParameters":{params}}}"#))
                .unwrap()
                .validate()
                .map_err(|e| e.to_string())
        };
        assert!(spec(r#"{"work_mem":"8MB","pg_stat_statements.max":"1000"}"#).is_ok());
        for bad in [
            r#"{"work_mem = '1MB'\nsynchronous_standby_names":"x"}"#,
            r#"{"shared buffers":"1GB"}"#,
            r#"{"1abc":"1"}"#,
            r#"{"":"1"}"#,
        ] {
            let e = spec(bad).unwrap_err();
            assert!(
                e.contains("is not a PostgreSQL parameter name"),
                "{bad}: {e}"
            );
        }
        let e = spec(r#"{"work_mem":"1MB\nfsync = off"}"#).unwrap_err();
        assert!(e.contains("control character"), "{e}");
    }

    #[test]
    fn conninfo_passwords_are_redacted_in_every_form() {
        let cases = [
            (
                "host=a port=5432 password=s3cret user=u",
                "host=a port=5432 password=*** user=u",
            ),
            ("password = 'a b\\'c' host=a", "password = *** host=a"),
            ("host=a passwordx=1", "host=a passwordx=1"),
            (
                "postgresql://u:s3cret@db.example:5432/x?sslmode=require",
                "postgresql://u:***@db.example:5432/x?sslmode=require",
            ),
            (
                "postgres://db/x?user=u&password=s3cret&sslmode=require",
                "postgres://db/x?user=u&password=***&sslmode=require",
            ),
            ("postgresql://u@db/x", "postgresql://u@db/x"),
        ];
        for (given, want) in cases {
            assert_eq!(redact_conninfo(given), want, "{given}");
        }
        let settings = StandbySettings {
            primary_conninfo: "host=a password='top secret'".into(),
            ..Default::default()
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    fn new_spec() -> ClusterSpec {
        ClusterSpec {
            init_mode: Some(ClusterInitMode::New),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_match_upstream() {
        let d = new_spec().with_defaults();
        assert_eq!(d.max_standby_lag, Some(1_232_896));
        assert_eq!(d.sleep_interval.unwrap().to_string(), "5s");
        assert_eq!(
            d.dead_keeper_removal_interval.unwrap().to_string(),
            "48h0m0s"
        );
        assert!(d.validate().is_ok());
    }

    #[test]
    fn init_mode_required() {
        let e = ClusterSpec::default().validate().unwrap_err();
        assert!(e.0.contains("initMode"), "{e}");
    }

    #[test]
    fn negative_duration_named() {
        let s = ClusterSpec::from_json(r#"{"initMode":"new","failInterval":"-3s"}"#).unwrap();
        assert!(
            s.validate()
                .unwrap_err()
                .0
                .starts_with("failInterval must be positive")
        );
    }

    #[test]
    fn unknown_enum_value_names_field() {
        let e = ClusterSpec::from_json(r#"{"initMode":"bogus"}"#).unwrap_err();
        assert!(e.0.contains("initMode"), "{e}");
    }

    #[test]
    fn out_of_range_count_names_field() {
        let e = ClusterSpec::from_json(r#"{"initMode":"new","maxStandbys":70000}"#).unwrap_err();
        assert!(e.0.contains("maxStandbys"), "{e}");
        let s = ClusterSpec::from_json(r#"{"initMode":"new","maxStandbys":0}"#).unwrap();
        assert!(s.validate().unwrap_err().0.contains("maxStandbys"));
    }

    #[test]
    fn a_standby_cluster_is_made_by_pitr_only() {
        let existing = ClusterSpec::from_json(
            r#"{"initMode":"existing","role":"standby","existingConfig":{"keeperUID":"k1"},"standbyConfig":{"standbySettings":{"primaryConninfo":"host=p"}}}"#,
        )
        .unwrap();
        let why = existing.validate().unwrap_err().0;
        assert!(why.contains("initMode \"pitr\""), "{why}");
        let pitr = ClusterSpec::from_json(
            r#"{"initMode":"pitr","role":"standby","pitrConfig":{"dataRestoreCommand":"x %d"},"standbyConfig":{"standbySettings":{"primaryConninfo":"host=p"}}}"#,
        )
        .unwrap();
        assert!(pitr.validate().is_ok());
    }

    #[test]
    fn pg_hba_newline_rejected() {
        let s = ClusterSpec::from_json(
            r#"{"initMode":"new","pgHBA":["host all all 0.0.0.0/0 md5\nlocal all all trust"]}"#,
        )
        .unwrap();
        assert!(s.validate().unwrap_err().0.contains("pgHBA"));
    }

    #[test]
    fn reserved_slot_rejected() {
        let s = ClusterSpec::from_json(
            r#"{"initMode":"new","additionalMasterReplicationSlots":["stolon_x"]}"#,
        )
        .unwrap();
        assert!(s.validate().unwrap_err().0.contains("reserved"));
    }

    #[test]
    fn unknown_fields_ignored() {
        assert!(ClusterSpec::from_json(r#"{"initMode":"new","someFutureField":3}"#).is_ok());
    }

    #[test]
    fn null_pg_hba_differs_from_empty() {
        let a = ClusterSpec::from_json(r#"{"initMode":"new","pgHBA":null}"#).unwrap();
        let b = ClusterSpec::from_json(r#"{"initMode":"new","pgHBA":[]}"#).unwrap();
        assert_eq!(a.pg_hba, None);
        assert_eq!(b.pg_hba, Some(vec![]));
    }

    #[test]
    fn max_slot_wal_keep_size_defaults_and_validates() {
        assert_eq!(new_spec().max_slot_wal_keep_size(), "10GB");
        let from_params = ClusterSpec::from_json(
            r#"{"initMode":"new","pgParameters":{"max_slot_wal_keep_size":"2GB"}}"#,
        )
        .unwrap();
        assert_eq!(from_params.max_slot_wal_keep_size(), "2GB");
        let both = ClusterSpec::from_json(
            r#"{"initMode":"new","maxSlotWalKeepSize":"-1","pgParameters":{"max_slot_wal_keep_size":"2GB"}}"#,
        )
        .unwrap();
        assert_eq!(both.max_slot_wal_keep_size(), "-1", "the field wins");
        assert!(both.validate().is_ok());
        for bad in ["10 gigs", "-5", "1.5GB", "", "3000TB", "10kB"] {
            let s = ClusterSpec {
                max_slot_wal_keep_size: Some(bad.into()),
                ..new_spec()
            };
            let e = s.validate().unwrap_err();
            assert!(e.0.starts_with("maxSlotWalKeepSize"), "{bad}: {e}");
        }
        assert_eq!(parse_wal_keep_size_mb("10GB"), Ok(10 * 1024));
        assert_eq!(parse_wal_keep_size_mb("512"), Ok(512));
        assert_eq!(parse_wal_keep_size_mb("1TB"), Ok(1024 * 1024));
    }

    #[test]
    fn update_cannot_change_init_mode() {
        let old = new_spec();
        let new = ClusterSpec {
            init_mode: Some(ClusterInitMode::Existing),
            existing_config: Some(ExistingConfig {
                keeper_uid: "k1".into(),
            }),
            ..Default::default()
        };
        assert!(old.check_update(&new).unwrap_err().0.contains("initMode"));
    }
}
