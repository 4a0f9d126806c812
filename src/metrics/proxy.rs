//! The proxy's metrics (upstream's proxy has none but the cluster identifier): sessions,
//! failed dials to the master and refused clients. Updated from the session threads
//! (src/proxy/session.rs): atomics only, no lock on the data path.

use super::{Component, Metrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Why a client was closed without being forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No master to send it to (none elected, this proxy not enabled, or the store unread).
    NoMaster,
    /// `--max-connections` sessions were already open.
    MaxConnections,
    /// Held for a master (`--hold-timeout`), none came in time.
    HoldTimeout,
    /// Read-only side: no standby qualifies (and no fallback to the master).
    NoStandby,
}

impl Refusal {
    fn label(self) -> RefusalLabel {
        RefusalLabel {
            reason: match self {
                Refusal::NoMaster => "no_master",
                Refusal::MaxConnections => "max_connections",
                Refusal::HoldTimeout => "hold_timeout",
                Refusal::NoStandby => "no_standby",
            },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabel {
    reason: &'static str,
}

/// The sessions of one side of the proxy (read-write to the master, or read-only).
#[derive(Clone, Debug, Default)]
struct SessionSeries {
    active: Gauge,
    total: Counter,
    connect_errors: Counter,
}

/// Cheap to clone; clones update the same series.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    /// The side this handle counts sessions for: the master's, unless from
    /// [`ProxyMetrics::for_read_only`].
    sessions: SessionSeries,
    read_only_sessions: SessionSeries,
    refused: Family<RefusalLabel, Counter>,
    held: Counter,
    kernel_forwarded: Counter,
}

impl Default for ProxyMetrics {
    /// Registered nowhere (tests that do not look at metrics).
    fn default() -> ProxyMetrics {
        let m = ProxyMetrics {
            sessions: SessionSeries::default(),
            read_only_sessions: SessionSeries::default(),
            refused: Family::default(),
            held: Counter::default(),
            kernel_forwarded: Counter::default(),
        };
        // Every reason shows from the start, at 0, so a rate() over them works at once.
        for reason in [
            Refusal::NoMaster,
            Refusal::MaxConnections,
            Refusal::HoldTimeout,
            Refusal::NoStandby,
        ] {
            let _ = m.refused.get_or_create(&reason.label());
        }
        m
    }
}

impl Metrics {
    /// Registers the proxy's metrics (and the cluster identifier).
    pub fn proxy(&self, cluster_name: &str) -> ProxyMetrics {
        self.identify(cluster_name, Component::Proxy);
        let m = ProxyMetrics::default();
        self.register(
            "stolon_proxy_sessions_active",
            "Client sessions being forwarded to the master now",
            m.sessions.active.clone(),
        );
        self.register(
            "stolon_proxy_sessions",
            "Client sessions forwarded to the master (connected to it) since the proxy started",
            m.sessions.total.clone(),
        );
        self.register(
            "stolon_proxy_master_connect_errors",
            "Connections to the master that failed or timed out, each closing the client that needed it",
            m.sessions.connect_errors.clone(),
        );
        self.register(
            "stolon_proxy_read_only_sessions_active",
            "Read-only client sessions being forwarded to a standby (or the master as a fallback) now",
            m.read_only_sessions.active.clone(),
        );
        self.register(
            "stolon_proxy_read_only_sessions",
            "Read-only client sessions forwarded (connected to their db) since the proxy started",
            m.read_only_sessions.total.clone(),
        );
        self.register(
            "stolon_proxy_read_only_connect_errors",
            "Connections of read-only clients to their db that failed or timed out",
            m.read_only_sessions.connect_errors.clone(),
        );
        self.register(
            "stolon_proxy_clients_refused",
            "Clients closed without being forwarded, by reason",
            m.refused.clone(),
        );
        self.register(
            "stolon_proxy_clients_held",
            "Clients that waited for a master (--hold-timeout) instead of being closed at once",
            m.held.clone(),
        );
        self.register(
            "stolon_proxy_kernel_forwarded_sessions",
            "Sessions (of either side) whose bytes the kernel moved (--kernel-forwarding)",
            m.kernel_forwarded.clone(),
        );
        m
    }
}

impl ProxyMetrics {
    /// The same series, counting sessions and failed connections as read-only ones.
    pub fn for_read_only(&self) -> ProxyMetrics {
        ProxyMetrics {
            sessions: self.read_only_sessions.clone(),
            ..self.clone()
        }
    }

    /// A session to the master (read-only: to its db) began; it counts as active until the
    /// guard is dropped.
    pub fn session_started(&self) -> SessionGuard {
        self.sessions.total.inc();
        self.sessions.active.inc();
        SessionGuard(self.sessions.active.clone())
    }

    /// A session was handed to the kernel (`--kernel-forwarding`).
    pub fn kernel_forwarded(&self) {
        self.kernel_forwarded.inc();
    }

    pub fn connect_error(&self) {
        self.sessions.connect_errors.inc();
    }

    pub fn refused(&self, reason: Refusal) {
        self.refused.get_or_create(&reason.label()).inc();
    }

    /// A client began waiting for a master.
    pub fn held(&self) {
        self.held.inc();
    }
}

/// Held for the life of a session: dropping it, however the session ends, takes it off the
/// active gauge.
#[derive(Debug)]
pub struct SessionGuard(Gauge);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
