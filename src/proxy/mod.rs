//! The proxy: sends every client to the elected master and cuts them off from any other.
//!
//! Shape: a check loop (`check.rs`) reads clusterdata on a timer and on every watch event,
//! decides the target (`target.rs`, pure) and switches the route (`route.rs`); the accept loop
//! (`session.rs`) serves each client under the route current when it connected, and a route
//! switch cancels every session of the old one.

mod check;
mod listen;
mod route;
mod session;
mod store_source;
mod target;
#[cfg(test)]
mod tests;

pub use check::ClusterSource;
pub use route::Destination;
pub use target::{NoTarget, Target, select_target};

use crate::cluster::new_uid;
use crate::role::RoleContext;
use crate::store::Store;
use crate::systemd::Notifier;
use listen::Listening;
use route::Router;
use session::Keepalive;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen_address: String,
    pub port: u16,
    /// Close the listening socket when the store cannot be read for proxyTimeout.
    pub stop_listening: bool,
    /// Seconds; 0 = OS default.
    pub tcp_keepalive_idle: u32,
    pub tcp_keepalive_count: u32,
    pub tcp_keepalive_interval: u32,
}

impl ProxyConfig {
    pub fn from_loaded(
        l: &crate::config::Loaded,
    ) -> Result<ProxyConfig, crate::config::ConfigError> {
        use crate::config::flags;
        Ok(ProxyConfig {
            listen_address: l.require(&flags::LISTEN_ADDRESS)?,
            port: l.port(&flags::PORT)?,
            stop_listening: l.bool(&flags::STOP_LISTENING)?,
            tcp_keepalive_idle: l.seconds(&flags::TCP_KEEPALIVE_IDLE)?,
            tcp_keepalive_count: l.seconds(&flags::TCP_KEEPALIVE_COUNT)?,
            tcp_keepalive_interval: l.seconds(&flags::TCP_KEEPALIVE_INTERVAL)?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "cannot listen on {addr}: {source} (is another process using it? change --listen-address/--port)"
    )]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot use the listening socket handed to the proxy: {0}")]
    HandedListener(std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Runs the proxy on the etcd store until `ctx.shutdown` is cancelled: listens on the handed
/// sockets (or binds `listen_address:port` after the first successful check), tells systemd
/// READY=1 once it listens and has read clusterdata once, STATUS= and `ctx.status` on every
/// change (`routing to 10.0.0.5:5432 (master db 8a3f0c21)`, `no master: refusing connections
/// (<why>)`, `no master: not listening (<why>)`), WATCHDOG=1 from the check loop, STOPPING=1
/// at shutdown.
pub async fn run(cfg: ProxyConfig, ctx: RoleContext) -> Result<(), ProxyError> {
    let store = Store::connect(&ctx.store).await?;
    let result = run_with_source(
        cfg,
        store.clone(),
        ctx.listeners,
        ctx.shutdown,
        ctx.status,
        ctx.notifier,
    )
    .await;
    // Our info key goes now rather than at TTL expiry, so a sentinel switching masters does not
    // wait for a proxy that is gone.
    if let Err(e) = store.revoke_lease().await {
        tracing::debug!(error = %e, "cannot revoke the proxy's store lease; its info expires by TTL");
    }
    result
}

/// Runs the proxy against `source` until `shutdown` is cancelled. `listeners`: already-bound
/// sockets (systemd activation, tests) that are used and never closed while running; none binds
/// `listen_address:port` after the first successful check. `status` receives a one-line
/// description of what the proxy does, on every change; `notifier` gets the same lines and the
/// readiness, watchdog and stopping notifications.
pub(crate) async fn run_with_source<S: ClusterSource>(
    cfg: ProxyConfig,
    source: S,
    listeners: Vec<std::net::TcpListener>,
    shutdown: CancellationToken,
    status: watch::Sender<String>,
    notifier: Arc<Notifier>,
) -> Result<(), ProxyError> {
    let uid = new_uid();
    let router = Router::new();
    let keepalive = Keepalive {
        idle_secs: cfg.tcp_keepalive_idle,
        interval_secs: cfg.tcp_keepalive_interval,
        count: cfg.tcp_keepalive_count,
    };
    let listen_on = format!("{}:{}", cfg.listen_address, cfg.port);
    let span = tracing::info_span!("proxy", proxy_uid = %uid);
    let entered = span.enter();
    tracing::info!("proxy starting");
    let listening = if listeners.is_empty() {
        Listening::owned(cfg.listen_address, cfg.port, router.subscribe(), keepalive)
    } else {
        Listening::handed(listeners, router.subscribe(), keepalive)
            .map_err(ProxyError::HandedListener)?
    };
    drop(entered);
    let mut checker = check::Checker::new(
        uid,
        router,
        listening,
        status,
        cfg.stop_listening,
        listen_on,
        notifier,
    );
    checker.run(&source, &shutdown).instrument(span).await
}
