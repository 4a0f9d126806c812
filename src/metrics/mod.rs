//! Prometheus metrics (`--metrics-listen-address`): one registry per process, each role's
//! metrics (`keeper.rs`, `sentinel.rs`, `proxy.rs`, plus what every role has: the cluster
//! identifier and the last store contact) and the HTTP endpoint that serves them (`http.rs`).
//! The same endpoint (and the keeper's `--api-listen-address`) serves the keeper's health
//! checks for load balancers: `board.rs` holds what the keeper saw, `health.rs` decides.
//!
//! Where upstream stolon has a metric, name, type, labels and meaning are upstream's
//! (cmd/keeper/cmd/metrics.go, cmd/sentinel/cmd/metrics.go, cmd/common.go there), so existing
//! dashboards and alerts keep working; the others are ours and listed in README.md. The loops
//! only call the small methods of the role's metrics struct: nothing here decides anything.

mod board;
mod health;
#[cfg(test)]
mod health_tests;
mod http;
mod keeper;
mod proxy;
mod sentinel;
mod store;
#[cfg(test)]
mod tests;

pub use board::{HealthBoard, Instance, boot_now};
pub use health::{Check, Observation};
pub use http::{CONTENT_TYPE, MetricsError, Routes, bind, serve};
pub use keeper::{KeeperMetrics, PgRole};
pub use proxy::{ProxyMetrics, Refusal, SessionGuard};
pub use sentinel::{SentinelMetrics, StandbyLag, standby_lags};

use crate::locks::lock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A gauge of seconds (a unix timestamp or a duration), fractional like upstream's
/// `SetToCurrentTime`.
pub(crate) type SecondsGauge = Gauge<f64, AtomicU64>;

/// The process's registry. Cheap to clone; clones share it. A role registers its metrics once
/// at start (`keeper`, `sentinel`, `proxy`); a scrape renders whatever is registered by then.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    registry: Mutex<Registry>,
    /// An endpoint serves this registry (`--metrics-listen-address` was given). A role may
    /// gather something only for its metrics when nobody would read it otherwise.
    served: bool,
    /// What the keeper's health endpoints answer from; unused by the other roles.
    health: HealthBoard,
}

/// Which process this is, for `stolon_cluster_identifier{component}` (upstream's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Keeper,
    Sentinel,
    Proxy,
}

impl Component {
    fn as_str(self) -> &'static str {
        match self {
            Component::Keeper => "keeper",
            Component::Sentinel => "sentinel",
            Component::Proxy => "proxy",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster_name: String,
    component: &'static str,
}

impl Metrics {
    /// A registry nobody serves (tests, or no `--metrics-listen-address`): roles update their
    /// metrics all the same, it costs a few atomic writes.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// A registry an HTTP endpoint serves.
    pub fn served() -> Metrics {
        Metrics {
            inner: Arc::new(Inner {
                registry: Mutex::new(Registry::default()),
                served: true,
                health: HealthBoard::default(),
            }),
        }
    }

    pub fn is_served(&self) -> bool {
        self.inner.served
    }

    /// The keeper's health board (the endpoints answer from it once the keeper registered).
    pub fn health(&self) -> HealthBoard {
        self.inner.health.clone()
    }

    /// The Prometheus text format (0.0.4, what upstream's Go client serves by default) of
    /// everything registered.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(
            &mut out,
            &lock(&self.inner.registry),
        )?;
        Ok(out)
    }

    /// `help` gets a full stop appended by the client library. A counter's exposed name gets
    /// `_total` appended: pass it without.
    fn register(&self, name: &str, help: &str, metric: impl Metric) {
        lock(&self.inner.registry).register(name, help, metric);
    }

    /// Upstream's `stolon_cluster_identifier{cluster_name,component} 1`, the series dashboards
    /// join every other on.
    fn identify(&self, cluster_name: &str, component: Component) {
        let family = Family::<ClusterLabels, Gauge>::default();
        family
            .get_or_create(&ClusterLabels {
                cluster_name: cluster_name.to_string(),
                component: component.as_str(),
            })
            .set(1);
        self.register(
            "stolon_cluster_identifier",
            "Set to 1, is labelled with the cluster_name and component",
            family,
        );
    }

    /// `stolon_store_last_success_seconds`, read from the store handle at each scrape: every
    /// successful request counts, whichever part of the role made it.
    pub fn watch_store(&self, store: &crate::store::Store) {
        lock(&self.inner.registry)
            .register_collector(Box::new(store::StoreContact(store.last_contact())));
    }
}

/// Seconds since the unix epoch, now (0 before 1970: a clock that far off shows as such).
pub(crate) fn unix_now() -> f64 {
    unix_seconds(SystemTime::now())
}

pub(crate) fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d: Duration| d.as_secs_f64())
}
