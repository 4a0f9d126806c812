//! stolon-sentinel: parse flags, load the layered configuration, start logging, run the sentinel
//! until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use stolon::config::{self, ConfigError, Flags, Loaded, SentinelRole};
use stolon::sentinel::SentinelConfig;
use stolon::store::StoreConfig;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "stolon-sentinel",
    version,
    about = "stolon sentinel: discovers keepers and computes the cluster view"
)]
struct Cli {
    #[command(flatten)]
    flags: Flags<SentinelRole>,
}

fn main() -> ExitCode {
    match configure() {
        Ok((cfg, store)) => match run(cfg, store) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => config::exit_with_error(format!("{e:#}")),
        },
        Err(e) => config::exit_with_error(e),
    }
}

/// Everything is validated before anything is logged or connected: a bad flag gets one line.
fn configure() -> Result<(SentinelConfig, StoreConfig), ConfigError> {
    let cli = Cli::try_parse().map_err(config::usage_error)?;
    let loaded = Loaded::load(&cli.flags)?;
    let log = loaded.log_settings()?;
    let store = loaded.store_config()?;
    stolon::telemetry::init(&log);
    if let Some(addr) = loaded.metrics_listen_address() {
        tracing::warn!(%addr, "--metrics-listen-address is not implemented yet; ignoring it");
    }
    let cfg = loaded.sentinel_config()?;
    Ok((cfg, store))
}

fn run(cfg: SentinelConfig, store: StoreConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let shutdown = stolon::shutdown::on_signals().context("cannot install signal handlers")?;
        run_role(cfg, store, shutdown).await
    })
}

async fn run_role(
    cfg: SentinelConfig,
    store: StoreConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Ok(stolon::sentinel::run(cfg, store, shutdown).await?)
}
