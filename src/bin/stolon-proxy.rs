//! stolon-proxy: parse flags, load the layered configuration, start logging, run the proxy
//! until SIGINT/SIGTERM (SIGHUP reloads the log level). Under systemd it uses the sockets of
//! `stolon-proxy@.socket` when passed and notifies readiness, status, watchdog and stopping.

use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use stolon::config::{self, ConfigError, Flags, Loaded, ProxyRole};
use stolon::proxy::ProxyConfig;
use stolon::store::StoreConfig;
use stolon::systemd::{Notifier, ServiceEnv};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "stolon-proxy",
    version,
    about = "stolon proxy: sends every client to the elected master"
)]
struct Cli {
    #[command(flatten)]
    flags: Flags<ProxyRole>,
}

fn main() -> ExitCode {
    // SAFETY: first thing in main, before the tokio runtime: no other thread exists yet.
    let service = unsafe { stolon::systemd::take_env() };
    match configure() {
        Ok((cfg, store, flags)) => match run(cfg, store, flags, service) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => config::exit_with_error(format!("{e:#}")),
        },
        Err(e) => config::exit_with_error(e),
    }
}

/// Everything is validated before anything is logged or connected: a bad flag gets one line.
fn configure() -> Result<(ProxyConfig, StoreConfig, Flags<ProxyRole>), ConfigError> {
    let cli = Cli::try_parse().map_err(config::usage_error)?;
    let loaded = Loaded::load(&cli.flags)?;
    let log = loaded.log_settings()?;
    let store = loaded.store_config()?;
    stolon::telemetry::init(&log);
    if let Some(addr) = loaded.metrics_listen_address() {
        tracing::warn!(%addr, "--metrics-listen-address is not implemented yet; ignoring it");
    }
    let cfg = loaded.proxy_config()?;
    Ok((cfg, store, cli.flags))
}

fn run(
    cfg: ProxyConfig,
    store: StoreConfig,
    flags: Flags<ProxyRole>,
    service: ServiceEnv,
) -> anyhow::Result<()> {
    let listeners = service.activated.tcp_listeners()?;
    if !listeners.is_empty() {
        tracing::info!(
            sockets = listeners.len(),
            "socket-activated: serving on the sockets systemd passed (--listen-address/--port unused)"
        );
    }
    let notifier = service.notifier;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let shutdown = stolon::shutdown::on_signals().context("cannot install signal handlers")?;
        stolon::shutdown::reload_on_sighup(flags, notifier.clone(), shutdown.clone())
            .context("cannot install the SIGHUP handler")?;
        run_role(cfg, store, listeners, shutdown, notifier).await
    })
}

async fn run_role(
    cfg: ProxyConfig,
    store: StoreConfig,
    listeners: Vec<std::net::TcpListener>,
    shutdown: CancellationToken,
    notifier: Arc<Notifier>,
) -> anyhow::Result<()> {
    Ok(stolon::proxy::run_with_notifier(cfg, store, listeners, shutdown, notifier).await?)
}
