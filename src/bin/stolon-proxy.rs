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
        |loaded| loaded.proxy_config(),
        |cfg, store, service, shutdown| async move {
            let listeners = service.activated.tcp_listeners()?;
            if !listeners.is_empty() {
                tracing::info!(
                    sockets = listeners.len(),
                    "socket-activated: serving on the sockets systemd passed (--listen-address/--port unused)"
                );
            }
            let notifier = service.notifier;
            Ok(stolon::proxy::run_with_notifier(cfg, store, listeners, shutdown, notifier).await?)
        },
    )
}
