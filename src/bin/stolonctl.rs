//! stolonctl: the stolon command line client. Errors go to stderr as one line, exit status 1.

use clap::Parser;
use std::process::ExitCode;
use stolon::config;
use stolon::ctl::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return config::exit_with_error(config::usage_error(e)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return config::exit_with_error(format!("cannot start the tokio runtime: {e}")),
    };
    // CtlError's message already includes its cause: print it alone, not the source chain.
    match runtime.block_on(stolon::ctl::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => config::exit_with_error(e),
    }
}
