//! The keeper's metrics: upstream's eight (cmd/keeper/cmd/metrics.go there) and the fencing
//! counter; and its health board (`board.rs`), which the same loop calls feed.

use super::{Component, HealthBoard, Metrics, SecondsGauge, unix_now};
use crate::cluster::{ClusterData, DbRole, KeeperUid};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::time::Duration;

/// A role as upstream's `role` label names it (its `common.Roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgRole {
    Undefined,
    Master,
    Standby,
}

impl PgRole {
    const ALL: [PgRole; 3] = [PgRole::Undefined, PgRole::Master, PgRole::Standby];

    fn as_str(self) -> &'static str {
        match self {
            PgRole::Undefined => "undefined",
            PgRole::Master => "master",
            PgRole::Standby => "standby",
        }
    }
}

impl From<DbRole> for PgRole {
    fn from(role: DbRole) -> PgRole {
        match role {
            DbRole::Undefined => PgRole::Undefined,
            DbRole::Master => PgRole::Master,
            DbRole::Standby => PgRole::Standby,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

/// Cheap to clone; clones update the same series.
#[derive(Clone, Debug)]
pub struct KeeperMetrics {
    clusterdata_last_valid_update: SecondsGauge,
    target_role: Family<RoleLabel, Gauge>,
    local_role: Family<RoleLabel, Gauge>,
    needs_reload: Gauge,
    needs_restart: Gauge,
    last_sync_success: SecondsGauge,
    sleep_interval: SecondsGauge,
    shutdown: SecondsGauge,
    fencing_events: Counter,
    served: bool,
    health: HealthBoard,
}

impl Metrics {
    /// Registers the keeper's metrics (and the cluster identifier), and opens its health
    /// endpoints.
    pub fn keeper(&self, cluster_name: &str) -> KeeperMetrics {
        self.identify(cluster_name, Component::Keeper);
        self.inner.health.enable(cluster_name);
        let m = KeeperMetrics {
            clusterdata_last_valid_update: SecondsGauge::default(),
            target_role: Family::default(),
            local_role: Family::default(),
            needs_reload: Gauge::default(),
            needs_restart: Gauge::default(),
            last_sync_success: SecondsGauge::default(),
            sleep_interval: SecondsGauge::default(),
            shutdown: SecondsGauge::default(),
            fencing_events: Counter::default(),
            served: self.is_served(),
            health: self.health(),
        };
        // As upstream, every role series exists from the start, at 0.
        set_role(&m.target_role, None);
        set_role(&m.local_role, None);
        self.register(
            "stolon_keeper_clusterdata_last_valid_update_seconds",
            "Last time we received a valid clusterdata from our store as seconds since unix epoch",
            m.clusterdata_last_valid_update.clone(),
        );
        self.register(
            "stolon_keeper_target_role",
            "Keeper last requested target role",
            m.target_role.clone(),
        );
        self.register(
            "stolon_keeper_local_role",
            "Keeper current local role",
            m.local_role.clone(),
        );
        self.register(
            "stolon_keeper_needs_reload",
            "Set to 1 if Postgres requires reload",
            m.needs_reload.clone(),
        );
        self.register(
            "stolon_keeper_needs_restart",
            "Set to 1 if Postgres requires restart",
            m.needs_restart.clone(),
        );
        self.register(
            "stolon_keeper_last_sync_success_seconds",
            "Last time we successfully synced our keeper",
            m.last_sync_success.clone(),
        );
        self.register(
            "stolon_keeper_sleep_interval",
            "Seconds to sleep between sync loops",
            m.sleep_interval.clone(),
        );
        self.register(
            "stolon_keeper_shutdown_seconds",
            "Shutdown time (received termination signal) since unix epoch in seconds",
            m.shutdown.clone(),
        );
        self.register(
            "stolon_keeper_fencing_events",
            "Times this keeper stopped or killed its master PostgreSQL because it could not reach the store in time",
            m.fencing_events.clone(),
        );
        m
    }
}

/// One series per role, the given one at 1 (none: all 0).
fn set_role(family: &Family<RoleLabel, Gauge>, role: Option<PgRole>) {
    for r in PgRole::ALL {
        family
            .get_or_create(&RoleLabel { role: r.as_str() })
            .set(i64::from(role == Some(r)));
    }
}

impl KeeperMetrics {
    /// A metrics endpoint reads these: worth asking PostgreSQL what only the metrics need.
    pub fn served(&self) -> bool {
        self.served
    }

    /// The health board the keeper's info publisher feeds (`board.rs`).
    pub fn health(&self) -> HealthBoard {
        self.health.clone()
    }

    /// A clusterdata was read and is usable (format and spec valid); `keeper` is this
    /// keeper's uid.
    pub fn valid_clusterdata(&self, cd: &ClusterData, keeper: &KeeperUid) {
        self.clusterdata_last_valid_update.set(unix_now());
        self.health.read_clusterdata(cd, keeper);
    }

    /// What PostgreSQL runs as, and what the clusterdata asks of it (`None`: no db assigned).
    pub fn roles(&self, local: PgRole, target: Option<PgRole>) {
        set_role(&self.local_role, Some(local));
        set_role(&self.target_role, target);
    }

    /// Upstream's semantics: 1 from when a reload is due until one succeeds.
    pub fn needs_reload(&self, due: bool) {
        self.needs_reload.set(i64::from(due));
    }

    /// 1 while PostgreSQL reports a setting changed that only a restart applies.
    pub fn needs_restart(&self, due: bool) {
        self.needs_restart.set(i64::from(due));
    }

    /// The db converged to what the clusterdata asks.
    pub fn synced(&self) {
        self.last_sync_success.set(unix_now());
    }

    pub fn sleep_interval(&self, interval: Duration) {
        self.sleep_interval.set(interval.as_secs_f64());
    }

    /// The keeper was told to stop (it then stops PostgreSQL; the endpoint serves until then).
    pub fn shutting_down(&self) {
        self.shutdown.set(unix_now());
    }

    /// The keeper fenced its master: stopped it, or its fence thread killed it.
    pub fn fenced(&self) {
        self.fencing_events.inc();
    }
}
