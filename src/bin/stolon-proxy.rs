//! stolon-proxy: sends every client to the elected master and cuts them off from any other.

use clap::Parser;
use std::process::ExitCode;
use stolon::config::{Flags, ProxyRole};

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
    let service = stolon::systemd::service_env();
    stolon::daemon::main(
        service,
        Cli::try_parse().map(|cli| cli.flags),
        stolon::proxy::ProxyConfig::from_loaded,
        |cfg, ctx| async move { Ok(stolon::proxy::run(cfg, ctx).await?) },
    )
}
