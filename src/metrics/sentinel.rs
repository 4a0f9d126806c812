//! The sentinel's metrics: upstream's three (cmd/sentinel/cmd/metrics.go there), failovers and
//! the replication lag of each standby.

use super::{Component, Metrics, SecondsGauge, unix_now};
use crate::cluster::{ClusterData, DbRole, DbUid, KeeperUid};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StandbyLabels {
    keeper: String,
    db: String,
}

/// Cheap to clone; clones update the same series.
#[derive(Clone, Debug)]
pub struct SentinelMetrics {
    last_cluster_check_success: SecondsGauge,
    is_leader: Gauge,
    leader_count: Gauge,
    failovers: Counter,
    standby_lag: Family<StandbyLabels, Gauge>,
}

impl Metrics {
    /// Registers the sentinel's metrics (and the cluster identifier).
    pub fn sentinel(&self, cluster_name: &str) -> SentinelMetrics {
        self.identify(cluster_name, Component::Sentinel);
        let m = SentinelMetrics {
            last_cluster_check_success: SecondsGauge::default(),
            is_leader: Gauge::default(),
            leader_count: Gauge::default(),
            failovers: Counter::default(),
            standby_lag: Family::default(),
        };
        self.register(
            "stolon_sentinel_last_cluster_check_success_seconds",
            "Last time we successfully performed a cluster check as seconds since unix epoch",
            m.last_cluster_check_success.clone(),
        );
        self.register(
            "stolon_sentinel_is_leader",
            "Set to 1 if the sentinel is currently a leader",
            m.is_leader.clone(),
        );
        // A gauge, as upstream exposes it.
        self.register(
            "stolon_sentinel_leader_count",
            "Number of times this sentinel has been elected as leader",
            m.leader_count.clone(),
        );
        self.register(
            "stolon_sentinel_failovers",
            "Times this sentinel, as leader, wrote a clusterdata electing a new master in place of the old one",
            m.failovers.clone(),
        );
        self.register(
            "stolon_sentinel_standby_lag_bytes",
            "WAL bytes each standby is behind its master, from the positions the keepers last reported (leader only)",
            m.standby_lag.clone(),
        );
        m
    }
}

impl SentinelMetrics {
    /// A check as leader went through: read, decided and, if needed, written.
    pub fn check_succeeded(&self) {
        self.last_cluster_check_success.set(unix_now());
    }

    /// Leadership won (counted) or lost.
    pub fn leadership(&self, leading: bool) {
        if leading {
            self.leader_count.inc();
        }
        self.is_leader.set(i64::from(leading));
        if !leading {
            self.following();
        }
    }

    /// A check found another sentinel leading. Only the leader reports lag, so series are not
    /// doubled across sentinels (and a check that was still running when leadership was lost
    /// leaves none behind).
    pub fn following(&self) {
        self.standby_lag.clear();
    }

    /// A written clusterdata replaced the master.
    pub fn failover(&self) {
        self.failovers.inc();
    }

    /// The lag of every standby in `cd` (the clusterdata the leader holds now); standbys no
    /// longer in it lose their series.
    pub fn standby_lags(&self, cd: &ClusterData) {
        self.standby_lag.clear();
        for lag in standby_lags(cd) {
            let labels = StandbyLabels {
                keeper: lag.keeper.to_string(),
                db: lag.db.to_string(),
            };
            self.standby_lag
                .get_or_create(&labels)
                .set(i64::try_from(lag.bytes).unwrap_or(i64::MAX));
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyLag {
    pub keeper: KeeperUid,
    pub db: DbUid,
    pub bytes: u64,
}

/// Each standby's distance behind the master in WAL bytes, from the xLogPos the keepers last
/// published (so it is as fresh as sleepInterval). None without a master. A standby ahead of
/// the master's last report counts as 0.
pub fn standby_lags(cd: &ClusterData) -> Vec<StandbyLag> {
    let Some(master) = cd.master_db() else {
        return Vec::new();
    };
    cd.dbs
        .values()
        .filter(|db| db.uid != master.uid && db.spec.role == DbRole::Standby)
        .map(|db| StandbyLag {
            keeper: db.spec.keeper_uid.clone(),
            db: db.uid.clone(),
            bytes: master.status.x_log_pos.saturating_sub(db.status.x_log_pos),
        })
        .collect()
}
