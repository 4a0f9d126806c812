//! What every daemon binary does around its role: one-line errors for bad configuration before
//! anything is logged or connected, logging, signals (SIGTERM stops, SIGHUP reloads), a tokio
//! runtime, and exit status 1 with `error: <one line>` on failure.

use crate::config::{self, ConfigError, Flags, Loaded, RoleMarker};
use crate::role::RoleContext;
use crate::store::StoreConfig;
use crate::systemd::ServiceEnv;
use anyhow::Context;
use std::future::Future;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Runs a daemon role. `service` comes from `systemd::service_env()` (called first thing in main),
/// `parsed` from clap, `role_config` picks the role's settings out of the layered config, and
/// `role` (the role's `run`) runs until the context's shutdown token is cancelled.
pub fn main<R, C, F, Fut>(
    service: ServiceEnv,
    parsed: Result<Flags<R>, clap::Error>,
    role_config: impl FnOnce(&Loaded) -> Result<C, ConfigError>,
    role: F,
) -> ExitCode
where
    R: RoleMarker + Send + 'static,
    F: FnOnce(C, RoleContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let configured = parsed
        .map_err(config::usage_error)
        .and_then(|flags| configure(&flags, role_config).map(|(cfg, set)| (cfg, set, flags)));
    let (cfg, settings, flags) = match configured {
        Ok(c) => c,
        Err(e) => return config::exit_with_error(e),
    };
    match run(cfg, settings, flags, service, role) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => config::exit_with_error(format!("{e:#}")),
    }
}

/// What the daemon itself needs besides the role's config.
struct Settings {
    store: StoreConfig,
    /// `--metrics-listen-address`.
    metrics: Option<String>,
    /// `--api-listen-address` (keeper only).
    api: Option<String>,
}

fn configure<R: RoleMarker, C>(
    flags: &Flags<R>,
    role_config: impl FnOnce(&Loaded) -> Result<C, ConfigError>,
) -> Result<(C, Settings), ConfigError> {
    let loaded = Loaded::load(flags)?;
    let log = loaded.log_settings()?;
    let store = StoreConfig::from_loaded(&loaded)?;
    let metrics = loaded.metrics_listen_address()?;
    let api = loaded.api_listen_address()?;
    crate::telemetry::init(&log);
    Ok((
        role_config(&loaded)?,
        Settings {
            store,
            metrics,
            api,
        },
    ))
}

fn run<R, C, F, Fut>(
    cfg: C,
    settings: Settings,
    flags: Flags<R>,
    service: ServiceEnv,
    role: F,
) -> anyhow::Result<()>
where
    R: RoleMarker + Send + 'static,
    F: FnOnce(C, RoleContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let shutdown = crate::shutdown::on_signals().context("cannot install signal handlers")?;
        crate::shutdown::reload_on_sighup(flags, service.notifier.clone(), shutdown.clone())
            .context("cannot install the SIGHUP handler")?;
        let listeners = service.activated.tcp_listeners()?;
        if !listeners.main.is_empty() {
            tracing::info!(
                sockets = listeners.main.len(),
                "socket-activated: serving on the sockets systemd passed (--listen-address/--port unused)"
            );
        }
        if !listeners.read_only.is_empty() {
            tracing::info!(
                sockets = listeners.read_only.len(),
                "socket-activated: read-only clients on the sockets systemd passed named read-only (--read-only-listen-address/--read-only-port unused)"
            );
        }
        let (metrics, endpoint) =
            start_endpoints(settings.metrics.as_deref(), settings.api.as_deref()).await?;
        let ctx = RoleContext::new(settings.store, shutdown)
            .with_notifier(service.notifier)
            .with_listeners(listeners.main)
            .with_read_only_listeners(listeners.read_only)
            .with_metrics(metrics);
        let result = role(cfg, ctx).await;
        // Served until the role has returned, not only until the signal: a keeper stopping
        // PostgreSQL is still observable then.
        endpoint.cancel();
        result
    })
}

/// Binds the metrics endpoint and the keeper's health API before the role starts (a taken
/// port is a startup error) and serves them until the returned token is cancelled. The same
/// address given to both is one listener serving both.
async fn start_endpoints(
    metrics_addr: Option<&str>,
    api_addr: Option<&str>,
) -> anyhow::Result<(crate::metrics::Metrics, CancellationToken)> {
    use crate::metrics::{Metrics, Routes};
    let stop = CancellationToken::new();
    let metrics = match metrics_addr {
        Some(_) => Metrics::served(),
        None => Metrics::new(),
    };
    let api_addr = api_addr.filter(|a| Some(*a) != metrics_addr);
    if let Some(addr) = metrics_addr {
        let routes = Routes {
            metrics: true,
            health: true,
        };
        serve_at("metrics-listen-address", addr, routes, &metrics, &stop).await?;
    }
    if let Some(addr) = api_addr {
        let routes = Routes {
            metrics: false,
            health: true,
        };
        serve_at("api-listen-address", addr, routes, &metrics, &stop).await?;
    }
    Ok((metrics, stop))
}

async fn serve_at(
    flag: &'static str,
    addr: &str,
    routes: crate::metrics::Routes,
    metrics: &crate::metrics::Metrics,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let listener = crate::metrics::bind(flag, addr).await?;
    let local = listener
        .local_addr()
        .map_or_else(|_| addr.to_string(), |a| a.to_string());
    let what = if routes.metrics {
        "serving metrics at /metrics (and, on a keeper, the health checks)"
    } else {
        "serving the health checks (/health, /primary, /replica, /read-only)"
    };
    tracing::info!(addr = %local, "{what}");
    tokio::spawn(crate::metrics::serve(
        listener,
        metrics.clone(),
        routes,
        stop.clone(),
    ));
    Ok(())
}
