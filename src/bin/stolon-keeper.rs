//! stolon-keeper: parse flags, load the layered configuration, start logging, run the keeper
//! until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;
use stolon::config::{self, ConfigError, Flags, KeeperRole, Loaded};
use stolon::keeper::KeeperConfig;
use stolon::store::StoreConfig;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "stolon-keeper",
    version,
    about = "stolon keeper: manages one PostgreSQL instance"
)]
struct Cli {
    #[command(flatten)]
    flags: Flags<KeeperRole>,
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
fn configure() -> Result<(KeeperConfig, StoreConfig), ConfigError> {
    let cli = Cli::try_parse().map_err(config::usage_error)?;
    let loaded = Loaded::load(&cli.flags)?;
    let log = loaded.log_settings()?;
    let store = loaded.store_config()?;
    stolon::telemetry::init(&log);
    if let Some(addr) = loaded.metrics_listen_address() {
        tracing::warn!(%addr, "--metrics-listen-address is not implemented yet; ignoring it");
    }
    let cfg = loaded.keeper_config()?;
    Ok((cfg, store))
}

fn run(cfg: KeeperConfig, store: StoreConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let shutdown = stolon::shutdown::on_signals().context("cannot install signal handlers")?;
        run_role(cfg, store, shutdown).await
    })
}

async fn run_role(
    cfg: KeeperConfig,
    store: StoreConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Ok(stolon::keeper::run(cfg, store, shutdown).await?)
}
