//! Which standbys the read-only side may send clients to, decided from the clusterdata alone.
//! Pure, like `target.rs`: name resolution happens in the check loop.

use super::target::join_host_port;
use crate::cluster::{ClusterData, DbUid};

/// A standby that qualifies for read-only clients, at `addr` (`host:port`, not yet resolved).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadableStandby {
    pub db_uid: DbUid,
    pub addr: String,
}

/// The standbys of this cluster that serve read-only clients now, in db uid order: each a
/// standby following the master inside the cluster (not an external primary), healthy, on a
/// healthy keeper, with a usable address, and at most `maxStandbyLag` bytes behind the master's
/// last reported WAL position. None without a master: there is nothing to measure lag against,
/// and a standby that follows no one is no replica of anything current.
pub fn readable_standbys(cd: &ClusterData) -> Vec<ReadableStandby> {
    let Some(master) = cd.master_db() else {
        return Vec::new();
    };
    let max_lag = u64::from(cd.cluster.spec.max_standby_lag());
    cd.dbs
        .values()
        .filter(|db| db.uid != master.uid && db.is_standby_of(&master.uid))
        .filter(|db| db.status.healthy)
        .filter(|db| {
            cd.keepers
                .get(&db.spec.keeper_uid)
                .is_some_and(|k| k.status.healthy)
        })
        // The keepers' last reports: as fresh as sleepInterval. A standby ahead of the master's
        // last report is not behind.
        .filter(|db| master.status.x_log_pos.saturating_sub(db.status.x_log_pos) <= max_lag)
        .filter_map(|db| {
            let host = db.status.listen_address.as_str();
            let port = db.status.port.as_str();
            let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
            (!host.is_empty() && port_ok).then(|| ReadableStandby {
                db_uid: db.uid.clone(),
                addr: join_host_port(host, port),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Db, DbRole, FollowConfig, FollowType, Keeper};

    /// A master `m` and standbys `s1`, `s2` following it, all healthy and caught up.
    fn cluster() -> ClusterData {
        let mut cd: ClusterData = serde_json::from_str(
            r#"{"formatVersion":1,"cluster":{"uid":"c1","generation":1,"spec":{"initMode":"new","maxStandbyLag":1000},"status":{"master":"m"}}}"#,
        )
        .unwrap();
        for (uid, port) in [("m", "5432"), ("s1", "5433"), ("s2", "5434")] {
            let keeper = format!("k{uid}");
            let mut db = Db {
                uid: uid.into(),
                ..Default::default()
            };
            db.spec.keeper_uid = keeper.as_str().into();
            db.status.healthy = true;
            db.status.listen_address = "10.0.0.5".into();
            db.status.port = port.into();
            db.status.x_log_pos = 50_000;
            if uid == "m" {
                db.spec.role = DbRole::Master;
            } else {
                db.spec.role = DbRole::Standby;
                db.spec.follow_config = Some(FollowConfig::internal(&"m".into()));
            }
            cd.dbs.insert(uid.into(), db);
            let mut k = Keeper {
                uid: keeper.as_str().into(),
                ..Default::default()
            };
            k.status.healthy = true;
            cd.keepers.insert(keeper.as_str().into(), k);
        }
        cd
    }

    fn uids(cd: &ClusterData) -> Vec<String> {
        readable_standbys(cd)
            .into_iter()
            .map(|s| s.db_uid.to_string())
            .collect()
    }

    fn db<'a>(cd: &'a mut ClusterData, uid: &str) -> &'a mut Db {
        cd.dbs.get_mut(&DbUid::from(uid)).unwrap()
    }

    #[test]
    fn healthy_caught_up_standbys_of_the_master_qualify_with_their_addresses() {
        let cd = cluster();
        assert_eq!(
            readable_standbys(&cd),
            vec![
                ReadableStandby {
                    db_uid: "s1".into(),
                    addr: "10.0.0.5:5433".into()
                },
                ReadableStandby {
                    db_uid: "s2".into(),
                    addr: "10.0.0.5:5434".into()
                },
            ]
        );
    }

    #[test]
    fn the_master_never_qualifies_nor_does_a_promoted_standby() {
        let mut cd = cluster();
        // The sentinel promotes s1: its role becomes master and the cluster's master moves.
        db(&mut cd, "s1").spec.role = DbRole::Master;
        db(&mut cd, "s1").spec.follow_config = None;
        cd.cluster.status.master = Some("s1".into());
        db(&mut cd, "s2").spec.follow_config = Some(FollowConfig::internal(&"s1".into()));
        assert_eq!(uids(&cd), ["s2"]);
    }

    #[test]
    fn an_unhealthy_standby_or_keeper_does_not_qualify() {
        let mut cd = cluster();
        db(&mut cd, "s1").status.healthy = false;
        assert_eq!(uids(&cd), ["s2"]);
        let mut cd = cluster();
        cd.keepers.get_mut(&"ks2".into()).unwrap().status.healthy = false;
        assert_eq!(uids(&cd), ["s1"]);
        let mut cd = cluster();
        cd.keepers.remove(&"ks2".into());
        assert_eq!(uids(&cd), ["s1"]);
    }

    #[test]
    fn a_standby_lagging_past_max_standby_lag_does_not_qualify() {
        let mut cd = cluster();
        db(&mut cd, "s1").status.x_log_pos = 50_000 - 1000;
        db(&mut cd, "s2").status.x_log_pos = 50_000 - 1001;
        assert_eq!(uids(&cd), ["s1"]);
        // Ahead of the master's last report: not behind at all.
        db(&mut cd, "s2").status.x_log_pos = 60_000;
        assert_eq!(uids(&cd), ["s1", "s2"]);
    }

    #[test]
    fn the_default_max_standby_lag_applies_when_the_spec_has_none() {
        let mut cd = cluster();
        cd.cluster.spec.max_standby_lag = None;
        let default = u64::from(cd.cluster.spec.max_standby_lag());
        db(&mut cd, "m").status.x_log_pos = 10 * default;
        db(&mut cd, "s1").status.x_log_pos = 9 * default;
        db(&mut cd, "s2").status.x_log_pos = 9 * default - 1;
        assert_eq!(uids(&cd), ["s1"]);
    }

    #[test]
    fn a_standby_following_another_db_or_an_external_primary_does_not_qualify() {
        let mut cd = cluster();
        db(&mut cd, "s1").spec.follow_config = Some(FollowConfig::internal(&"gone".into()));
        let mut external = FollowConfig::internal(&"m".into());
        external.follow_type = FollowType::External;
        db(&mut cd, "s2").spec.follow_config = Some(external);
        assert!(uids(&cd).is_empty());
        let mut cd = cluster();
        db(&mut cd, "s1").spec.follow_config = None;
        db(&mut cd, "s2").spec.role = DbRole::Undefined;
        assert!(uids(&cd).is_empty());
    }

    #[test]
    fn a_standby_without_a_usable_address_does_not_qualify() {
        let mut cd = cluster();
        db(&mut cd, "s1").status.listen_address.clear();
        db(&mut cd, "s2").status.port = "0".into();
        assert!(uids(&cd).is_empty());
        let mut cd = cluster();
        db(&mut cd, "s1").status.listen_address = "::1".into();
        assert_eq!(readable_standbys(&cd)[0].addr, "[::1]:5433");
    }

    #[test]
    fn without_a_master_no_standby_qualifies() {
        let mut cd = cluster();
        cd.cluster.status.master = None;
        assert!(uids(&cd).is_empty());
        let mut cd = cluster();
        cd.dbs.remove(&"m".into());
        assert!(uids(&cd).is_empty());
    }
}
