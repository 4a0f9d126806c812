//! The proxy: sends every client to the elected master and cuts them off from any other.
//!
//! Shape: a check loop (`check.rs`) reads clusterdata on a timer and on every watch event,
//! decides the target (`target.rs`, pure) and switches the route (`route.rs`); the accept loop
//! (`session.rs`) serves each client under the route current when it connected, and a route
//! switch cancels every session of the old one.

mod check;
#[cfg(test)]
mod client_tests;
mod hold;
#[cfg(test)]
mod hold_tests;
mod kernel;
mod limits;
mod listen;
mod read_only;
#[cfg(test)]
mod read_only_tests;
mod route;
mod session;
mod standbys;
mod store_source;
mod target;
#[cfg(test)]
mod tests;
mod workers;

pub use kernel::KernelForwardingError;
pub use route::Destination;
pub use standbys::{ReadableStandby, readable_standbys};
pub use store_source::ClusterSource;
pub use target::{NoTarget, Target, select_target};

use crate::cluster::new_uid;
use crate::metrics::ProxyMetrics;
use crate::role::RoleContext;
use crate::store::Store;
use crate::systemd::Notifier;
use listen::Listening;
use route::Router;
use session::{ClientPolicy, Keepalive, Routes};
use std::sync::Arc;
use std::time::Duration;
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
    /// Sessions served at once; 0 = derived from the open-file limit.
    pub max_connections: usize,
    /// A client silent this long after connecting is closed; zero = never.
    pub client_startup_timeout: Duration,
    /// How long a new client waits for a master during a failover or switchover; zero = it is
    /// closed at once (upstream's behaviour).
    pub hold_timeout: Duration,
    /// The read-only listener (clients go to standbys); none = `listen_address`.
    pub read_only_listen_address: Option<String>,
    /// None: no read-only listener of our own (systemd may still pass one).
    pub read_only_port: Option<u16>,
    /// Read-only clients go to the master while no standby qualifies.
    pub read_only_fallback_master: bool,
    /// The kernel moves each session's bytes (src/proxy/kernel.rs).
    pub kernel_forwarding: bool,
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
            max_connections: l.parse(&flags::MAX_CONNECTIONS, |v| {
                v.trim()
                    .parse()
                    .map_err(|_| format!("invalid number {v:?} (0 = from the open-file limit)"))
            })?,
            client_startup_timeout: l.duration(&flags::CLIENT_STARTUP_TIMEOUT)?,
            hold_timeout: l.duration(&flags::HOLD_TIMEOUT)?,
            read_only_listen_address: l.get(&flags::READ_ONLY_LISTEN_ADDRESS),
            read_only_port: l.port_opt(&flags::READ_ONLY_PORT)?,
            read_only_fallback_master: l.bool(&flags::READ_ONLY_FALLBACK_MASTER)?,
            kernel_forwarding: l.bool(&flags::KERNEL_FORWARDING)?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source} (is another process using it? change {flags})")]
    Bind {
        addr: String,
        /// The flags that set `addr`.
        flags: &'static str,
        source: std::io::Error,
    },
    #[error("cannot use the listening socket handed to the proxy: {0}")]
    HandedListener(std::io::Error),
    #[error(transparent)]
    KernelForwarding(#[from] KernelForwardingError),
    #[error("cannot start the threads client sessions run on: {0}")]
    Workers(std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Runs the proxy on the etcd store until `ctx.shutdown` is cancelled: listens on the handed
/// sockets (or binds `listen_address:port` after the first successful check), tells systemd
/// READY=1 once it listens and has read clusterdata once, STATUS= and `ctx.status` on every
/// change (`routing to 10.0.0.5:5432 (master db 8a3f0c21)`, `no master: holding new clients up
/// to 5s (<why>)`, `no master: refusing connections (<why>)`, `no master: not listening
/// (<why>)`), WATCHDOG=1 from the check loop, STOPPING=1 at shutdown.
pub async fn run(cfg: ProxyConfig, ctx: RoleContext) -> Result<(), ProxyError> {
    if let Err(e) = limits::raise_open_file_limit() {
        tracing::warn!(error = %e, "cannot raise the open-file limit; clients may be refused early");
    }
    let metrics = ctx.metrics.proxy(&ctx.store.cluster_name);
    let store = Store::connect(&ctx.store).await?;
    ctx.metrics.watch_store(&store);
    let handed = Handed {
        read_write: ctx.listeners,
        read_only: ctx.read_only_listeners,
    };
    let result = run_with_source(
        cfg,
        store.clone(),
        handed,
        ctx.shutdown,
        ctx.status,
        ctx.notifier,
        metrics,
    )
    .await;
    // Our info key goes now rather than at TTL expiry, so a sentinel switching masters does not
    // wait for a proxy that is gone.
    if let Err(e) = store.revoke_lease().await {
        tracing::debug!(error = %e, "cannot revoke the proxy's store lease; its info expires by TTL");
    }
    result
}

/// Listening sockets handed to the proxy (systemd activation, tests): used, and never closed
/// while running.
#[derive(Debug, Default)]
pub(crate) struct Handed {
    /// None: the proxy binds `listen_address:port` after the first successful check.
    pub read_write: Vec<std::net::TcpListener>,
    /// None: the proxy binds the read-only address and port, if `read_only_port` is set.
    pub read_only: Vec<std::net::TcpListener>,
}

/// Runs the proxy against `source` until `shutdown` is cancelled, on the `handed` sockets or
/// its own. `status` receives a one-line
/// description of what the proxy does, on every change; `notifier` gets the same lines and the
/// readiness, watchdog and stopping notifications; `metrics` counts the sessions.
pub(crate) async fn run_with_source<S: ClusterSource>(
    cfg: ProxyConfig,
    source: S,
    handed: Handed,
    shutdown: CancellationToken,
    status: watch::Sender<String>,
    notifier: Arc<Notifier>,
    metrics: ProxyMetrics,
) -> Result<(), ProxyError> {
    let uid = new_uid();
    let router = Router::new();
    let kernel = if cfg.kernel_forwarding {
        Some(Arc::new(kernel::KernelForwarding::load()?))
    } else {
        None
    };
    let policy = client_policy(&cfg, kernel, metrics);
    let policy_hold = policy.hold_timeout;
    let listen_on = format!("{}:{}", cfg.listen_address, cfg.port);
    let span = tracing::info_span!("proxy", proxy_uid = %uid);
    let entered = span.enter();
    tracing::info!(
        max_connections = policy.limit.max(),
        client_startup_timeout = ?policy.startup_timeout,
        hold_timeout = ?policy.hold_timeout,
        kernel_forwarding = policy.kernel.is_some(),
        "proxy starting"
    );
    let workers = Arc::new(workers::SessionWorkers::start().map_err(ProxyError::Workers)?);
    let read_only = read_only_side(&cfg, handed.read_only, &policy, &workers)?;
    let routes = Routes::Master(router.subscribe());
    let listening = if handed.read_write.is_empty() {
        Listening::owned(cfg.listen_address, cfg.port, routes, policy, workers)
    } else {
        Listening::handed(handed.read_write, routes, policy, workers)
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
    )
    .holding_for(policy_hold)
    .with_read_only(read_only);
    checker.run(&source, &shutdown).instrument(span).await
}

/// The read-only listener and its routes: on handed sockets named `read-only`, else on the
/// read-only address and port when one is set; none otherwise.
fn read_only_side(
    cfg: &ProxyConfig,
    handed: Vec<std::net::TcpListener>,
    policy: &ClientPolicy,
    workers: &Arc<workers::SessionWorkers>,
) -> Result<Option<check::ReadOnlySide>, ProxyError> {
    let router = read_only::ReadOnlyRouter::new();
    let routes = Routes::ReadOnly(router.subscribe());
    let policy = policy.for_read_only();
    let address = cfg
        .read_only_listen_address
        .clone()
        .unwrap_or_else(|| cfg.listen_address.clone());
    let (listening, listen_on) = match cfg.read_only_port {
        _ if !handed.is_empty() => (
            Listening::handed(handed, routes, policy, workers.clone())
                .map_err(ProxyError::HandedListener)?,
            "the read-only socket passed by systemd".to_string(),
        ),
        Some(port) => (
            Listening::owned(address.clone(), port, routes, policy, workers.clone()),
            format!("{address}:{port}"),
        ),
        None => return Ok(None),
    };
    tracing::info!(
        fallback_master = cfg.read_only_fallback_master,
        "read-only clients go to standbys"
    );
    Ok(Some(check::ReadOnlySide::new(
        router,
        listening,
        cfg.read_only_fallback_master,
        listen_on,
    )))
}

fn client_policy(
    cfg: &ProxyConfig,
    kernel: Option<Arc<kernel::KernelForwarding>>,
    metrics: ProxyMetrics,
) -> ClientPolicy {
    let max = match cfg.max_connections {
        0 => {
            let open_files =
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                    .map_or(1024, |(soft, _)| soft);
            limits::sessions_for(open_files)
        }
        n => n,
    };
    ClientPolicy {
        keepalive: Keepalive {
            idle_secs: cfg.tcp_keepalive_idle,
            interval_secs: cfg.tcp_keepalive_interval,
            count: cfg.tcp_keepalive_count,
        },
        startup_timeout: (!cfg.client_startup_timeout.is_zero())
            .then_some(cfg.client_startup_timeout),
        hold_timeout: hold_timeout(cfg),
        limit: limits::SessionLimit::new(max),
        accept_errors: Arc::new(limits::RateLimited::for_warnings()),
        kernel,
        metrics,
        read_only: false,
    }
}

fn hold_timeout(cfg: &ProxyConfig) -> Option<Duration> {
    (!cfg.hold_timeout.is_zero()).then_some(cfg.hold_timeout)
}
