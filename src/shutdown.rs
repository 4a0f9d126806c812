//! Signals: SIGINT/SIGTERM → a cancellation token every role watches; SIGHUP → re-read the
//! configuration and apply what can change while running.

use crate::config::{Flags, Loaded, RoleMarker};
use crate::systemd::Notifier;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGINT or SIGTERM. Must run inside a tokio runtime.
/// Handlers are installed before returning, so a signal arriving right after cannot be lost.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
        cancel.cancel();
    });
    Ok(token)
}

/// What SIGHUP changes in a running process; the rest of the configuration applies at the
/// next start. Shown in the `--config` help.
pub const RELOADS: &str = "log-level";

/// On every SIGHUP until `shutdown`: re-reads the layered configuration (same command-line
/// flags, the file and the environment again) and applies [`RELOADS`]. A configuration that no
/// longer loads is reported and the running one kept. Tells systemd (RELOADING=1, READY=1) so
/// `systemctl reload` waits for it. Must run inside a tokio runtime.
pub fn reload_on_sighup<R: RoleMarker + Send + 'static>(
    flags: Flags<R>,
    notifier: Arc<Notifier>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            notifier.reloading();
            reload(&flags);
            notifier.reloaded();
        }
    });
    Ok(())
}

fn reload<R: RoleMarker>(flags: &Flags<R>) {
    let loaded = Loaded::load(flags);
    match loaded.and_then(|l| l.log_settings().map(|s| (l, s))) {
        Ok((loaded, settings)) => {
            crate::telemetry::set_level(settings.level);
            tracing::info!(
                file = ?loaded.file,
                log_level = %settings.level,
                "configuration reloaded on SIGHUP ({RELOADS}; other settings apply at restart)"
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot reload the configuration on SIGHUP; keeping the running one");
        }
    }
}
