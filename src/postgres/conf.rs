//! postgresql.conf generation, for PostgreSQL 13 and newer (`wal_keep_size`,
//! recovery settings in postgresql.conf plus `standby.signal`). Pure functions.

use crate::cluster::{DbUid, RecoveryTargetSettings};
use std::collections::BTreeMap;
use std::path::Path;

pub use crate::cluster::MANAGED_PARAMETERS;

fn is_managed(name: &str) -> bool {
    crate::cluster::is_managed_parameter(name)
}

/// `stolon_<uid>`: the application_name and replication slot name of a db.
pub fn stolon_name(uid: &str) -> String {
    format!("stolon_{uid}")
}

/// The db uid inside a `stolon_<uid>` name, `None` for names stolon does not own.
pub fn uid_from_stolon_name(name: &str) -> Option<&str> {
    name.strip_prefix("stolon_").filter(|u| !u.is_empty())
}

/// The parameters only the keeper decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedParams {
    /// `--pg-listen-address` (`listen_addresses`).
    pub listen_address: String,
    pub port: u16,
    /// `unix_socket_directories`; upstream uses `/tmp`.
    pub socket_dir: String,
    /// `max_replication_slots` = maxStandbys; `max_wal_senders` = 2*maxStandbys+2+additional.
    pub max_standbys: u16,
    pub additional_wal_senders: u16,
    /// Sets `wal_log_hints=on`, which pg_rewind needs.
    pub use_pg_rewind: bool,
    /// Already formatted, see [`synchronous_standby_names`]; `""` without synchronous replication.
    pub synchronous_standby_names: String,
    /// True when the superuser or replication user authenticates with scram-sha-256: passwords
    /// must then be stored as SCRAM verifiers (`password_encryption`). md5 rules accept SCRAM
    /// verifiers, so md5 alone leaves the user's (or PostgreSQL's) choice alone.
    pub scram: bool,
}

/// Recovery settings of a standby (PostgreSQL ≥ 12: written into postgresql.conf, and the keeper
/// also writes `standby.signal`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoverySettings {
    /// Already formatted, e.g. from [`ReplConn::conninfo`].
    pub primary_conninfo: Option<String>,
    /// `stolon_<dbuid>` when following an internal db.
    pub primary_slot_name: Option<String>,
    pub recovery_min_apply_delay: Option<String>,
    pub restore_command: Option<String>,
    /// PITR targets; when absent `recovery_target_timeline=latest` is set so a standby follows
    /// the master across promotions.
    pub target: Option<RecoveryTargetSettings>,
}

impl RecoverySettings {
    /// A standby streaming from a db of this cluster through slot `stolon_<own db uid>`, its
    /// password read from `passfile` (see [`ReplConn::conninfo`]).
    pub fn internal_standby(
        conn: &ReplConn,
        own_db_uid: &str,
        passfile: Option<&Path>,
    ) -> RecoverySettings {
        RecoverySettings {
            primary_conninfo: Some(conn.conninfo(passfile)),
            primary_slot_name: Some(stolon_name(own_db_uid)),
            ..RecoverySettings::default()
        }
    }

    fn apply(&self, params: &mut BTreeMap<String, String>) {
        let mut set = |k: &str, v: &Option<String>| {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                params.insert(k.to_string(), v.clone());
            }
        };
        set("primary_conninfo", &self.primary_conninfo);
        set("primary_slot_name", &self.primary_slot_name);
        set("recovery_min_apply_delay", &self.recovery_min_apply_delay);
        set("restore_command", &self.restore_command);
        match &self.target {
            None => {
                params.insert("recovery_target_timeline".into(), "latest".into());
            }
            Some(t) => {
                set("recovery_target", &Some(t.recovery_target.clone()));
                set("recovery_target_lsn", &Some(t.recovery_target_lsn.clone()));
                set(
                    "recovery_target_name",
                    &Some(t.recovery_target_name.clone()),
                );
                set(
                    "recovery_target_time",
                    &Some(t.recovery_target_time.clone()),
                );
                set("recovery_target_xid", &Some(t.recovery_target_xid.clone()));
                set(
                    "recovery_target_timeline",
                    &Some(t.recovery_target_timeline.clone()),
                );
                params.insert("recovery_target_action".into(), "promote".into());
            }
        }
    }
}

/// Where and as whom to connect for replication (pg_basebackup, primary_conninfo).
#[derive(Clone, PartialEq, Eq)]
pub struct ReplConn {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// `stolon_<dbuid>` of the standby, so the master's pg_stat_replication and
    /// synchronous_standby_names can name it.
    pub application_name: String,
}

impl std::fmt::Debug for ReplConn {
    // The password never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplConn")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("application_name", &self.application_name)
            .finish_non_exhaustive()
    }
}

impl ReplConn {
    /// A libpq conninfo string (`sslmode=prefer` as upstream). It never holds the password: a
    /// conninfo is seen on command lines and by `SHOW primary_conninfo` (any member of
    /// pg_read_all_settings, which monitoring roles get). libpq reads the password from
    /// `passfile` ([`ReplConn::passfile_text`]) or `PGPASSFILE` instead.
    pub fn conninfo(&self, passfile: Option<&Path>) -> String {
        let mut parts = vec![
            kv("host", &self.host),
            kv("port", &self.port.to_string()),
            kv("user", &self.user),
        ];
        if let Some(f) = passfile {
            parts.push(kv("passfile", &f.display().to_string()));
        }
        parts.push(kv("application_name", &self.application_name));
        parts.push(kv("sslmode", "prefer"));
        parts.join(" ")
    }

    /// The password as a libpq password file (`.pgpass` format: any host, port, database and
    /// user), `None` without a password.
    pub fn passfile_text(&self) -> Option<String> {
        let pw = self.password.as_ref()?;
        Some(format!(
            "*:*:*:*:{}\n",
            pw.replace('\\', "\\\\").replace(':', "\\:")
        ))
    }
}

/// One libpq `key=value`, single-quoted with `\` escapes when needed.
fn kv(key: &str, value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\' || c == '=');
    if plain {
        format!("{key}={value}")
    } else {
        let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
        format!("{key}='{escaped}'")
    }
}

/// `synchronous_standby_names` for the db uids (as `stolon_<uid>`) plus external names: `""`,
/// a single name, or `N (a,b,...)` with N = the total so that every listed standby must
/// acknowledge (upstream deliberately avoids FIRST/ANY). Sorted so an unchanged set renders the
/// same and causes no reload.
pub fn synchronous_standby_names(db_uids: &[DbUid], external: &[String]) -> String {
    let mut names: Vec<String> = db_uids.iter().map(|u| stolon_name(u.as_str())).collect();
    names.extend(external.iter().cloned());
    names.sort();
    names.dedup();
    match names.len() {
        0 => String::new(),
        1 => names.remove(0),
        n => format!("{n} ({})", names.join(",")),
    }
}

/// How long a standby waits before it tries its primary again, unless the spec sets it.
/// PostgreSQL's 5 s is most of a failover: a standby told to follow the new master usually
/// connects before that master is promoted and has created its slot, is refused, and waits.
const WAL_RETRIEVE_RETRY_INTERVAL: &str = "1s";

/// The full parameter set: `init` (initdb's, when includePreviousConfig) < `spec` < managed.
/// Managed names in `init`/`spec` are dropped, except a user `wal_level=logical`, a user
/// `wal_keep_size`, `wal_retrieve_retry_interval` and `max_slot_wal_keep_size`, which are honoured (the keeper puts the
/// cluster spec's `maxSlotWalKeepSize` there, see `ClusterSpec::max_slot_wal_keep_size`).
pub fn build_parameters(
    init: Option<&BTreeMap<String, String>>,
    spec: &BTreeMap<String, String>,
    managed: &ManagedParams,
    recovery: Option<&RecoverySettings>,
) -> BTreeMap<String, String> {
    let mut p: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in init.into_iter().flatten().chain(spec) {
        p.insert(k.clone(), v.clone());
    }
    let user_wal_level = p.get("wal_level").cloned();
    let user_wal_keep_size = p.get("wal_keep_size").cloned();
    let slot_wal_keep_size = p.get("max_slot_wal_keep_size").cloned();
    let user_retry_interval = p.get("wal_retrieve_retry_interval").cloned();
    p.retain(|k, _| !is_managed(k));
    p.insert(
        "wal_retrieve_retry_interval".into(),
        user_retry_interval.unwrap_or_else(|| WAL_RETRIEVE_RETRY_INTERVAL.into()),
    );
    if let Some(v) = slot_wal_keep_size {
        // Managed so that it is not reported (mergePgParameters would copy the default into
        // the spec's pgParameters), yet its value is the spec's.
        p.insert("max_slot_wal_keep_size".into(), v);
    }

    let wal_level = match user_wal_level.as_deref() {
        Some("logical") => "logical",
        _ => "replica",
    };
    p.insert("wal_level".into(), wal_level.into());
    p.insert("hot_standby".into(), "on".into());
    p.insert(
        "wal_keep_size".into(),
        user_wal_keep_size.unwrap_or_else(|| "128".into()),
    );
    p.insert("unix_socket_directories".into(), managed.socket_dir.clone());
    p.insert("listen_addresses".into(), managed.listen_address.clone());
    p.insert("port".into(), managed.port.to_string());
    p.insert(
        "max_replication_slots".into(),
        managed.max_standbys.to_string(),
    );
    let wal_senders =
        u32::from(managed.max_standbys) * 2 + 2 + u32::from(managed.additional_wal_senders);
    p.insert("max_wal_senders".into(), wal_senders.to_string());
    if managed.use_pg_rewind {
        p.insert("wal_log_hints".into(), "on".into());
    }
    p.insert(
        "synchronous_standby_names".into(),
        managed.synchronous_standby_names.clone(),
    );
    if managed.scram {
        p.insert("password_encryption".into(), "scram-sha-256".into());
    }
    if let Some(r) = recovery {
        r.apply(&mut p);
    }
    p
}

/// The reported parameters: those from the config file minus the managed ones.
pub fn filter_managed(params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    params
        .iter()
        .filter(|(k, _)| !is_managed(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The whole postgresql.conf: `name = 'value'` per line, `'` doubled. The file is always fully
/// rewritten, so a parameter removed from the spec goes back to its default.
pub fn render_postgresql_conf(params: &BTreeMap<String, String>) -> String {
    render_with_include(None, params)
}

/// Like [`render_postgresql_conf`] but first includes another file (initdb's postgresql.conf,
/// for the temporary configuration used while initialising), so our values win.
pub(crate) fn render_with_include(
    include: Option<&str>,
    params: &BTreeMap<String, String>,
) -> String {
    let mut out = String::from("# Generated by stolon-keeper: every change here is overwritten.\n");
    if let Some(inc) = include {
        out.push_str(&format!("include '{}'\n", inc.replace('\'', "''")));
    }
    // Spec validation refuses such entries; the renderer never writes them either, so no entry
    // can add lines of its own (src/postgres/fuzz_tests.rs).
    let one_line = |(k, v): &(&String, &String)| {
        crate::cluster::is_parameter_name(k) && crate::cluster::is_parameter_value(v)
    };
    for (k, v) in params.iter().filter(one_line) {
        out.push_str(&format!("{k} = {}\n", quote_conf_value(v)));
    }
    out
}

/// A postgresql.conf string value. ⚠ upstream only doubles `'`, but the server also reads
/// backslash escapes inside quotes, so a `\` (e.g. in a password inside primary_conninfo) was
/// mangled; we escape it too so every value arrives verbatim.
fn quote_conf_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed() -> ManagedParams {
        ManagedParams {
            listen_address: "127.0.0.1".into(),
            port: 5433,
            socket_dir: "/tmp".into(),
            max_standbys: 20,
            additional_wal_senders: 5,
            use_pg_rewind: false,
            synchronous_standby_names: String::new(),
            scram: false,
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn renders_quoted_lines() {
        let text = render_postgresql_conf(&map(&[("a", "it's"), ("b", "x"), ("c", r"x\y")]));
        assert!(text.contains("a = 'it''s'\n"));
        assert!(text.contains(r"c = 'x\\y'"));
        assert!(text.contains("b = 'x'\n"));
        let text = render_with_include(Some("postgresql.conf"), &map(&[("b", "x")]));
        let inc = text.find("include 'postgresql.conf'").unwrap();
        assert!(inc < text.find("b = 'x'").unwrap());
    }

    #[test]
    fn managed_values_win_over_spec_and_init() {
        let init = map(&[("shared_buffers", "64MB"), ("work_mem", "1MB")]);
        let spec = map(&[
            ("work_mem", "8MB"),
            ("port", "9999"),
            ("max_wal_senders", "1"),
            ("primary_conninfo", "host=evil"),
            ("recovery_target_lsn", "0/1"),
            ("wal_level", "minimal"),
        ]);
        let p = build_parameters(Some(&init), &spec, &managed(), None);
        assert_eq!(p["shared_buffers"], "64MB");
        assert_eq!(p["work_mem"], "8MB");
        assert_eq!(p["port"], "5433");
        assert_eq!(p["listen_addresses"], "127.0.0.1");
        assert_eq!(p["unix_socket_directories"], "/tmp");
        assert_eq!(p["max_replication_slots"], "20");
        assert_eq!(p["max_wal_senders"], "47");
        assert_eq!(p["wal_level"], "replica");
        assert_eq!(p["hot_standby"], "on");
        assert_eq!(p["wal_keep_size"], "128");
        assert_eq!(p["wal_retrieve_retry_interval"], "1s");
        assert_eq!(p["synchronous_standby_names"], "");
        assert!(!p.contains_key("primary_conninfo"));
        assert!(!p.contains_key("recovery_target_lsn"));
        assert!(!p.contains_key("wal_log_hints"));
        assert!(!p.contains_key("password_encryption"));
    }

    #[test]
    fn user_logical_wal_level_and_wal_keep_size_are_honoured() {
        let spec = map(&[
            ("wal_level", "logical"),
            ("wal_keep_size", "1GB"),
            ("max_slot_wal_keep_size", "10GB"),
            ("wal_retrieve_retry_interval", "5s"),
        ]);
        let mut m = managed();
        m.use_pg_rewind = true;
        m.scram = true;
        let p = build_parameters(None, &spec, &m, None);
        assert_eq!(p["wal_level"], "logical");
        assert_eq!(p["wal_keep_size"], "1GB");
        assert_eq!(p["max_slot_wal_keep_size"], "10GB");
        assert_eq!(p["wal_retrieve_retry_interval"], "5s");
        assert!(render_postgresql_conf(&p).contains("max_slot_wal_keep_size = '10GB'\n"));
        assert_eq!(p["wal_log_hints"], "on");
        assert_eq!(p["password_encryption"], "scram-sha-256");
    }

    #[test]
    fn sync_standby_names_forms() {
        assert_eq!(synchronous_standby_names(&[], &[]), "");
        assert_eq!(synchronous_standby_names(&["b1".into()], &[]), "stolon_b1");
        assert_eq!(
            synchronous_standby_names(&["b1".into(), "a1".into()], &["ext".into()]),
            "3 (ext,stolon_a1,stolon_b1)"
        );
    }

    #[test]
    fn standby_recovery_settings() {
        let conn = ReplConn {
            host: "10.0.0.1".into(),
            port: 5432,
            user: "repl".into(),
            password: Some("pa ss'w\\d".into()),
            application_name: stolon_name("abc"),
        };
        assert_eq!(
            conn.conninfo(None),
            "host=10.0.0.1 port=5432 user=repl application_name=stolon_abc sslmode=prefer"
        );
        let passfile = Path::new("/var/lib/stolon/it's/replication.pgpass");
        assert_eq!(
            conn.conninfo(Some(passfile)),
            r"host=10.0.0.1 port=5432 user=repl passfile='/var/lib/stolon/it\'s/replication.pgpass' application_name=stolon_abc sslmode=prefer"
        );
        assert_eq!(
            conn.passfile_text().as_deref(),
            Some("*:*:*:*:pa ss'w\\\\d\n")
        );
        let r = RecoverySettings::internal_standby(&conn, "mine", Some(passfile));
        let p = build_parameters(None, &BTreeMap::new(), &managed(), Some(&r));
        assert_eq!(p["primary_slot_name"], "stolon_mine");
        assert_eq!(p["recovery_target_timeline"], "latest");
        assert_eq!(p["primary_conninfo"], conn.conninfo(Some(passfile)));
        let text = render_postgresql_conf(&p);
        assert!(
            !text.contains("pa ss"),
            "the password is not in postgresql.conf: {text}"
        );
        // The conninfo's own quotes survive postgresql.conf quoting.
        assert!(
            text.contains(r"passfile=''/var/lib/stolon/it\\''s/"),
            "{text}"
        );
    }

    #[test]
    fn reported_parameters_exclude_managed_ones() {
        let p = map(&[
            ("work_mem", "8MB"),
            ("port", "5432"),
            ("recovery_target_timeline", "latest"),
            ("wal_keep_size", "128"),
            ("max_slot_wal_keep_size", "10GB"),
        ]);
        assert_eq!(filter_managed(&p), map(&[("work_mem", "8MB")]));
        assert_eq!(uid_from_stolon_name("stolon_ab12"), Some("ab12"));
        assert_eq!(uid_from_stolon_name("other"), None);
        assert_eq!(uid_from_stolon_name("stolon_"), None);
    }
}
