//! stolon-keeper: manages one PostgreSQL instance, converging it to the sentinel's cluster view.

use clap::Parser;
use std::process::ExitCode;
use stolon::config::{Flags, KeeperRole};

#[derive(Parser)]
#[command(
    name = "stolon-keeper",
    version,
    about = "stolon keeper: manages one PostgreSQL instance as the sentinel decides"
)]
struct Cli {
    #[command(flatten)]
    flags: Flags<KeeperRole>,
}

fn main() -> ExitCode {
    // The keeper starts a copy of itself as its fence guard (src/keeper/fence.rs).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == stolon::keeper::GUARD_ARG)
    {
        return stolon::keeper::run_guard();
    }
    let service = stolon::systemd::service_env();
    stolon::daemon::main(
        service,
        Cli::try_parse().map(|cli| cli.flags),
        stolon::keeper::KeeperConfig::from_loaded,
        |cfg, ctx| async move { Ok(stolon::keeper::run(cfg, ctx).await?) },
    )
}
