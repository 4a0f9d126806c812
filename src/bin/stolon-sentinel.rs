//! stolon-sentinel: discovers keepers and, while leader, computes the cluster view.

use clap::Parser;
use std::process::ExitCode;
use stolon::config::{Flags, SentinelRole};

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
    let service = stolon::systemd::service_env();
    stolon::daemon::main(
        service,
        Cli::try_parse().map(|cli| cli.flags),
        stolon::sentinel::SentinelConfig::from_loaded,
        |cfg, ctx| async move { Ok(stolon::sentinel::run(cfg, ctx).await?) },
    )
}
