//! Where the proxy sends clients, decided from the clusterdata alone. Pure: name
//! resolution happens in the check loop, on the `host:port` this returns.

use crate::cluster::{CURRENT_FORMAT_VERSION, ClusterData, DbUid};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Route to the master db at `addr` (`host:port`, IPv6 hosts bracketed), not yet resolved.
    Master { db_uid: DbUid, addr: String },
    /// Refuse clients: accept and close at once.
    None { reason: NoTarget },
}

/// Why the proxy refuses clients; the text goes to the log and the systemd status line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoTarget {
    #[error("not started yet")]
    Starting,
    #[error("no clusterdata in the store (cluster not initialised?)")]
    NoClusterData,
    #[error("clusterdata formatVersion {0} is not supported (expected {CURRENT_FORMAT_VERSION})")]
    UnsupportedFormat(u64),
    #[error("clusterdata is invalid: {0}")]
    InvalidClusterData(String),
    #[error("no master elected (proxy.spec.masterDbUid is empty)")]
    NoMaster,
    #[error("master db {0} is not in clusterdata")]
    UnknownMasterDb(DbUid),
    #[error("master db {db_uid} has no usable address (listenAddress {host:?}, port {port:?})")]
    BadAddress {
        db_uid: DbUid,
        host: String,
        port: String,
    },
    #[error("this proxy ({0}) is not in proxy.spec.enabledProxies yet")]
    NotEnabled(String),
    #[error("cannot resolve master db {db_uid} address {addr}: {reason}")]
    Unresolvable {
        db_uid: DbUid,
        addr: String,
        reason: String,
    },
    #[error("no successful store check for proxyTimeout ({0:?})")]
    StoreTimeout(std::time::Duration),
    #[error("switching to a new master")]
    Switching,
    #[error("shutting down")]
    ShuttingDown,
}

impl NoTarget {
    /// Whether new clients should wait for a master (`--hold-timeout`) rather than be closed at
    /// once: only while the store is read and a master is on its way (a failover or switchover,
    /// this proxy not yet enabled, the master's address not yet published or resolvable). Never
    /// when the proxy cannot trust what it reads or is going away: those close clients at once.
    pub fn holds_clients(&self) -> bool {
        match self {
            NoTarget::NoMaster
            | NoTarget::UnknownMasterDb(_)
            | NoTarget::BadAddress { .. }
            | NoTarget::NotEnabled(_)
            | NoTarget::Unresolvable { .. }
            | NoTarget::Switching => true,
            // Not started: the store was never read. No clusterdata: a cluster not initialised
            // gets no master in seconds.
            NoTarget::Starting
            | NoTarget::NoClusterData
            | NoTarget::UnsupportedFormat(_)
            | NoTarget::InvalidClusterData(_)
            | NoTarget::StoreTimeout(_)
            | NoTarget::ShuttingDown => false,
        }
    }
}

impl Target {
    /// Whether clusterdata names a reachable-looking master. Then the proxy info publish must
    /// succeed for the check to count: the sentinel has to know this proxy exists before the
    /// two-phase switch can wait for it (upstream's rule).
    pub fn master_defined(&self) -> bool {
        matches!(
            self,
            Target::Master { .. }
                | Target::None {
                    reason: NoTarget::NotEnabled(_)
                }
        )
    }
}

/// The target for proxy `own_uid` given the clusterdata read from the store (`None` = no key).
pub fn select_target(cd: Option<&ClusterData>, own_uid: &str) -> Target {
    let none = |reason| Target::None { reason };
    let Some(cd) = cd else {
        return none(NoTarget::NoClusterData);
    };
    // The store already refuses these; checked again so the rule holds for any source.
    if cd.format_version != CURRENT_FORMAT_VERSION {
        return none(NoTarget::UnsupportedFormat(cd.format_version));
    }
    if let Err(e) = cd.cluster.spec.validate() {
        return none(NoTarget::InvalidClusterData(e.to_string()));
    }
    let master_uid = &cd.proxy.spec.master_db_uid;
    if master_uid.is_empty() {
        return none(NoTarget::NoMaster);
    }
    let Some(db) = cd.dbs.get(master_uid) else {
        return none(NoTarget::UnknownMasterDb(master_uid.clone()));
    };
    let host = db.status.listen_address.as_str();
    let port = db.status.port.as_str();
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    if host.is_empty() || !port_ok {
        return none(NoTarget::BadAddress {
            db_uid: master_uid.clone(),
            host: host.to_string(),
            port: port.to_string(),
        });
    }
    if !cd.proxy.spec.enabled_proxies.iter().any(|p| p == own_uid) {
        return none(NoTarget::NotEnabled(own_uid.to_string()));
    }
    Target::Master {
        db_uid: master_uid.clone(),
        addr: join_host_port(host, port),
    }
}

/// Go's net.JoinHostPort: brackets a host that contains a colon (IPv6 literal).
pub(super) fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Db, Generation, GoDuration};

    const ME: &str = "abcd1234";

    fn cd_with_master(host: &str, port: &str) -> ClusterData {
        let mut cd: ClusterData = serde_json::from_str(
            r#"{"formatVersion":1,"cluster":{"uid":"c1","generation":1,"spec":{"initMode":"new"},"status":{}}}"#,
        )
        .unwrap();
        let mut db = Db {
            uid: "db000001".into(),
            ..Default::default()
        };
        db.status.listen_address = host.into();
        db.status.port = port.into();
        cd.dbs.insert(db.uid.clone(), db);
        cd.proxy.generation = Generation::new(7);
        cd.proxy.spec.master_db_uid = "db000001".into();
        cd.proxy.spec.enabled_proxies = vec!["other000".into(), ME.into()];
        cd
    }

    fn reason(t: Target) -> NoTarget {
        match t {
            Target::None { reason } => reason,
            t => panic!("expected no target, got {t:?}"),
        }
    }

    #[test]
    fn routes_to_the_master_when_enabled() {
        let cd = cd_with_master("10.0.0.5", "5432");
        assert_eq!(
            select_target(Some(&cd), ME),
            Target::Master {
                db_uid: "db000001".into(),
                addr: "10.0.0.5:5432".into()
            }
        );
    }

    #[test]
    fn ipv6_and_hostnames_are_joined_like_go() {
        let cd = cd_with_master("::1", "5432");
        assert!(
            matches!(select_target(Some(&cd), ME), Target::Master { addr, .. } if addr == "[::1]:5432")
        );
        let cd = cd_with_master("db.example", "6000");
        assert!(
            matches!(select_target(Some(&cd), ME), Target::Master { addr, .. } if addr == "db.example:6000")
        );
    }

    #[test]
    fn no_clusterdata_means_no_target() {
        assert_eq!(reason(select_target(None, ME)), NoTarget::NoClusterData);
        assert!(!select_target(None, ME).master_defined());
    }

    #[test]
    fn unsupported_format_means_no_target() {
        let mut cd = cd_with_master("10.0.0.5", "5432");
        cd.format_version = 2;
        assert_eq!(
            reason(select_target(Some(&cd), ME)),
            NoTarget::UnsupportedFormat(2)
        );
    }

    #[test]
    fn invalid_spec_means_no_target() {
        let mut cd = cd_with_master("10.0.0.5", "5432");
        cd.cluster.spec.proxy_timeout = Some(GoDuration::from_secs(1));
        cd.cluster.spec.proxy_check_interval = Some(GoDuration::from_secs(5));
        assert!(matches!(
            reason(select_target(Some(&cd), ME)),
            NoTarget::InvalidClusterData(_)
        ));
    }

    #[test]
    fn empty_master_uid_means_no_target() {
        // Phase one of the two-phase switch: the sentinel clears masterDbUid.
        let mut cd = cd_with_master("10.0.0.5", "5432");
        cd.proxy.spec.master_db_uid.clear();
        assert_eq!(reason(select_target(Some(&cd), ME)), NoTarget::NoMaster);
    }

    #[test]
    fn unknown_master_db_means_no_target() {
        let mut cd = cd_with_master("10.0.0.5", "5432");
        cd.proxy.spec.master_db_uid = "gone0000".into();
        assert_eq!(
            reason(select_target(Some(&cd), ME)),
            NoTarget::UnknownMasterDb("gone0000".into())
        );
    }

    #[test]
    fn proxy_not_enabled_means_no_target_but_master_is_defined() {
        let mut cd = cd_with_master("10.0.0.5", "5432");
        cd.proxy.spec.enabled_proxies.retain(|p| p != ME);
        let t = select_target(Some(&cd), ME);
        assert!(t.master_defined());
        assert_eq!(reason(t), NoTarget::NotEnabled(ME.into()));
    }

    #[test]
    fn clients_are_held_only_while_a_master_is_on_its_way() {
        let held = [
            NoTarget::NoMaster,
            NoTarget::UnknownMasterDb("db000001".into()),
            NoTarget::BadAddress {
                db_uid: "db000001".into(),
                host: String::new(),
                port: String::new(),
            },
            NoTarget::NotEnabled(ME.into()),
            NoTarget::Unresolvable {
                db_uid: "db000001".into(),
                addr: "db.example:5432".into(),
                reason: "no address".into(),
            },
            NoTarget::Switching,
        ];
        for reason in held {
            assert!(reason.holds_clients(), "{reason}");
        }
        let closed_at_once = [
            NoTarget::Starting,
            NoTarget::NoClusterData,
            NoTarget::UnsupportedFormat(2),
            NoTarget::InvalidClusterData("bad".into()),
            NoTarget::StoreTimeout(std::time::Duration::from_secs(15)),
            NoTarget::ShuttingDown,
        ];
        for reason in closed_at_once {
            assert!(!reason.holds_clients(), "{reason}");
        }
    }

    #[test]
    fn the_reasons_of_a_failover_hold_clients() {
        // Phase one of the two-phase switch, as the proxy sees it.
        let mut cd = cd_with_master("10.0.0.5", "5432");
        cd.proxy.spec.master_db_uid.clear();
        assert!(reason(select_target(Some(&cd), ME)).holds_clients());
        // The new master elected, its keeper not yet reporting its address.
        let mut cd = cd_with_master("", "");
        assert!(reason(select_target(Some(&cd), ME)).holds_clients());
        cd.format_version = 2;
        assert!(!reason(select_target(Some(&cd), ME)).holds_clients());
    }

    #[test]
    fn missing_or_bad_address_means_no_target() {
        for (host, port) in [
            ("", "5432"),
            ("10.0.0.5", ""),
            ("10.0.0.5", "x"),
            ("10.0.0.5", "0"),
        ] {
            let cd = cd_with_master(host, port);
            assert!(
                matches!(
                    reason(select_target(Some(&cd), ME)),
                    NoTarget::BadAddress { .. }
                ),
                "{host:?}:{port:?}"
            );
        }
    }
}
