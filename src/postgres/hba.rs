//! pg_hba.conf generation. Pure.

use crate::cluster::SuReplAccessMode;
use std::net::IpAddr;

/// Authentication method for the superuser and replication user (`--pg-*-auth-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Md5,
    ScramSha256,
    Trust,
}

impl AuthMethod {
    /// As written in pg_hba.conf.
    pub fn as_hba(&self) -> &'static str {
        match self {
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Trust => "trust",
        }
    }
}

impl std::str::FromStr for AuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "md5" => Ok(AuthMethod::Md5),
            "scram-sha-256" => Ok(AuthMethod::ScramSha256),
            "trust" => Ok(AuthMethod::Trust),
            other => Err(format!(
                "unknown auth method {other:?} (use md5, scram-sha-256 or trust)"
            )),
        }
    }
}

/// What pg_hba.conf depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaParams<'a> {
    pub su_username: &'a str,
    pub su_auth: AuthMethod,
    pub repl_username: &'a str,
    pub repl_auth: AuthMethod,
    /// The cluster spec's `defaultSUReplAccessMode`.
    pub access_mode: SuReplAccessMode,
    /// The db's spec role is master (strict mode opens su/repl access only on the master).
    pub is_master: bool,
    /// listenAddress of every other db of the cluster (strict mode).
    pub other_db_addresses: &'a [String],
    /// The spec's pgHBA: `None` means the default `host all all 0.0.0.0/0 md5` + `::0/0`.
    pub spec_hba: Option<&'a [String]>,
    /// `--pg-trust-networks`: where a user whose method is trust is let in; empty = loopback.
    pub trust_networks: &'a [String],
    /// Only the keeper's and replication rules: used on a master restarted with synchronous
    /// replication until its synchronous standbys are in sync, so no client commits meanwhile.
    pub internal_only: bool,
}

/// pg_hba.conf lines, in order.
pub fn render_pg_hba(p: &HbaParams<'_>) -> Vec<String> {
    let (su, sua) = (p.su_username, p.su_auth.as_hba());
    let (repl, ra) = (p.repl_username, p.repl_auth.as_hba());
    let mut lines = vec![
        format!("local postgres {su} {sua}"),
        format!("local replication {repl} {ra}"),
    ];
    match p.access_mode {
        SuReplAccessMode::All => {
            for net in networks(p.su_auth, p.trust_networks) {
                lines.push(format!("host all {su} {net} {sua}"));
            }
            for net in networks(p.repl_auth, p.trust_networks) {
                lines.push(format!("host replication {repl} {net} {ra}"));
            }
        }
        SuReplAccessMode::Strict if p.is_master => {
            let mut addrs: Vec<&String> = p.other_db_addresses.iter().collect();
            addrs.sort();
            addrs.dedup();
            for addr in addrs {
                let target = host_rule_address(addr);
                // ⚠ upstream writes the replication auth method on the superuser line; we use
                // the superuser's own method, as in every other superuser rule.
                lines.push(format!("host all {su} {target} {sua}"));
                lines.push(format!("host replication {repl} {target} {ra}"));
            }
        }
        SuReplAccessMode::Strict => {}
    }
    if !p.internal_only {
        match p.spec_hba {
            Some(user) => lines.extend(user.iter().cloned()),
            None => {
                lines.push("host all all 0.0.0.0/0 md5".into());
                lines.push("host all all ::0/0 md5".into());
            }
        }
    }
    lines
}

/// Where a superuser or replication rule applies in access mode `all`: everywhere for a
/// password method; for trust (no password at all) only this host, unless the operator named
/// the networks (upstream opened trust to 0.0.0.0/0).
fn networks(method: AuthMethod, trust_networks: &[String]) -> Vec<String> {
    let list: &[&str] = match method {
        AuthMethod::Trust if !trust_networks.is_empty() => {
            return trust_networks.to_vec();
        }
        AuthMethod::Trust => &["127.0.0.1/32", "::1/128"],
        AuthMethod::Md5 | AuthMethod::ScramSha256 => &["0.0.0.0/0", "::0/0"],
    };
    list.iter().map(|n| n.to_string()).collect()
}

/// An address as a single-host rule: `/32` for IPv4, `/128` for IPv6 (upstream appends `/32`
/// even to IPv6 addresses, which PostgreSQL rejects), a host name as is.
fn host_rule_address(addr: &str) -> String {
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => format!("{addr}/32"),
        Ok(IpAddr::V6(_)) => format!("{addr}/128"),
        Err(_) => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base<'a>(others: &'a [String], spec: Option<&'a [String]>) -> HbaParams<'a> {
        HbaParams {
            su_username: "su",
            su_auth: AuthMethod::ScramSha256,
            repl_username: "repl",
            repl_auth: AuthMethod::Md5,
            access_mode: SuReplAccessMode::All,
            is_master: true,
            other_db_addresses: others,
            spec_hba: spec,
            trust_networks: &[],
            internal_only: false,
        }
    }

    #[test]
    fn trust_opens_only_this_host_unless_networks_are_named() {
        let mut p = base(&[], Some(&[]));
        p.su_auth = AuthMethod::Trust;
        p.repl_auth = AuthMethod::Trust;
        let lines = render_pg_hba(&p);
        assert_eq!(
            lines,
            vec![
                "local postgres su trust",
                "local replication repl trust",
                "host all su 127.0.0.1/32 trust",
                "host all su ::1/128 trust",
                "host replication repl 127.0.0.1/32 trust",
                "host replication repl ::1/128 trust",
            ]
        );
        let named = ["10.0.0.0/24".to_string()];
        p.trust_networks = &named;
        p.su_auth = AuthMethod::Md5;
        let lines = render_pg_hba(&p);
        assert!(lines.contains(&"host all su 0.0.0.0/0 md5".to_string()));
        assert!(lines.contains(&"host replication repl 10.0.0.0/24 trust".to_string()));
        assert!(
            !lines.iter().any(|l| l.contains("0.0.0.0/0 trust")),
            "{lines:?}"
        );
    }

    #[test]
    fn all_mode_with_default_rules() {
        let lines = render_pg_hba(&base(&[], None));
        assert_eq!(
            lines,
            vec![
                "local postgres su scram-sha-256",
                "local replication repl md5",
                "host all su 0.0.0.0/0 scram-sha-256",
                "host all su ::0/0 scram-sha-256",
                "host replication repl 0.0.0.0/0 md5",
                "host replication repl ::0/0 md5",
                "host all all 0.0.0.0/0 md5",
                "host all all ::0/0 md5",
            ]
        );
    }

    #[test]
    fn strict_mode_on_master_lists_other_dbs_sorted() {
        let others = vec!["10.0.0.3".to_string(), "10.0.0.2".into(), "fd00::1".into()];
        let spec = vec!["host app app 10.1.0.0/16 scram-sha-256".to_string()];
        let mut p = base(&others, Some(&spec));
        p.access_mode = SuReplAccessMode::Strict;
        let lines = render_pg_hba(&p);
        assert_eq!(
            lines[2..],
            [
                "host all su 10.0.0.2/32 scram-sha-256",
                "host replication repl 10.0.0.2/32 md5",
                "host all su 10.0.0.3/32 scram-sha-256",
                "host replication repl 10.0.0.3/32 md5",
                "host all su fd00::1/128 scram-sha-256",
                "host replication repl fd00::1/128 md5",
                "host app app 10.1.0.0/16 scram-sha-256",
            ]
        );
        p.is_master = false;
        assert_eq!(render_pg_hba(&p).len(), 3);
    }

    #[test]
    fn empty_spec_hba_and_internal_only() {
        let empty: Vec<String> = vec![];
        assert_eq!(render_pg_hba(&base(&[], Some(&empty))).len(), 6);
        let mut p = base(&[], None);
        p.internal_only = true;
        let lines = render_pg_hba(&p);
        assert_eq!(lines.len(), 6);
        assert!(lines.iter().all(|l| !l.starts_with("host all all")));
    }
}
