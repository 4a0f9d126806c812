//! What every role (keeper, sentinel, proxy) gets from outside, in one value: each role has one
//! entry point, `run(config, ctx)`. The binaries build it from systemd's environment and the
//! signals (src/daemon.rs); tests build the same with [`RoleContext::new`].

use crate::metrics::Metrics;
use crate::store::StoreConfig;
use crate::systemd::Notifier;
use std::net::TcpListener;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct RoleContext {
    /// Cancelled to stop the role (SIGTERM/SIGINT, or a test).
    pub shutdown: CancellationToken,
    /// systemd's notify socket; disabled outside systemd.
    pub notifier: Arc<Notifier>,
    /// Where the store is and how to talk to it.
    pub store: StoreConfig,
    /// Listening sockets handed over by socket activation (the proxy's
    /// `stolon-proxy@.socket`); the proxy binds its own when there are none.
    pub listeners: Vec<TcpListener>,
    /// Listening sockets handed over for the proxy's read-only clients (the socket named
    /// `read-only`, `stolon-proxy-read-only@.socket`).
    pub read_only_listeners: Vec<TcpListener>,
    /// The role's one-line status on every change (what systemd's STATUS= shows), for
    /// whatever reads the role's state from inside the process (tests, health endpoints).
    pub status: watch::Sender<String>,
    /// Where the role registers its metrics; served at /metrics with
    /// `--metrics-listen-address` (src/daemon.rs), read directly by tests.
    pub metrics: Metrics,
}

impl RoleContext {
    /// Outside systemd: no notifier, no handed sockets, a status nobody reads yet, metrics
    /// nobody serves.
    pub fn new(store: StoreConfig, shutdown: CancellationToken) -> RoleContext {
        RoleContext {
            shutdown,
            notifier: Arc::new(Notifier::disabled()),
            store,
            listeners: Vec::new(),
            read_only_listeners: Vec::new(),
            status: watch::channel(String::new()).0,
            metrics: Metrics::new(),
        }
    }

    pub fn with_notifier(mut self, notifier: Arc<Notifier>) -> RoleContext {
        self.notifier = notifier;
        self
    }

    pub fn with_listeners(mut self, listeners: Vec<TcpListener>) -> RoleContext {
        self.listeners = listeners;
        self
    }

    pub fn with_read_only_listeners(mut self, listeners: Vec<TcpListener>) -> RoleContext {
        self.read_only_listeners = listeners;
        self
    }

    pub fn with_metrics(mut self, metrics: Metrics) -> RoleContext {
        self.metrics = metrics;
        self
    }

    /// Reads every status line from now on.
    pub fn subscribe_status(&self) -> watch::Receiver<String> {
        self.status.subscribe()
    }
}

/// Publishes `line` to the status readers, waking them only when it changed.
pub(crate) fn publish_status(status: &watch::Sender<String>, line: &str) {
    status.send_if_modified(|current| {
        let changed = current != line;
        if changed {
            line.clone_into(current);
        }
        changed
    });
}
