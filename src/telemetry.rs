//! Logging: human-readable lines on stderr, or structured entries to journald when systemd
//! connected our stderr to the journal.

use crate::config::LogSettings;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. Call once, after the configuration was validated, so a
/// configuration error stays the only line on stderr.
pub fn init(settings: &LogSettings) {
    let filter = filter(settings.level);
    let journald = stderr_is_journal()
        .then(|| {
            tracing_journald::layer()
                .map(|l| l.with_syslog_identifier(settings.binary.to_string()))
                .ok()
        })
        .flatten();
    // try_init: a second init (tests calling role code twice) must not panic.
    let installed = match journald {
        Some(layer) => tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .try_init(),
        None => {
            let color = settings
                .color
                .unwrap_or_else(|| std::io::stderr().is_terminal());
            tracing_subscriber::registry()
                .with(filter)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(color)
                        .with_target(false),
                )
                .try_init()
        }
    };
    if installed.is_ok() && settings.deprecated_debug {
        tracing::warn!("--debug is deprecated, use --log-level=debug");
    }
}

/// Our crate (and binaries) at the chosen level; dependencies (tonic, h2, ...) no chattier
/// than info, since their debug output drowns ours.
fn filter(level: tracing::Level) -> EnvFilter {
    let deps = if level == tracing::Level::DEBUG {
        tracing::Level::INFO
    } else {
        level
    };
    let ours = [
        "stolon",
        "stolon_keeper",
        "stolon_sentinel",
        "stolon_proxy",
        "stolonctl",
    ];
    let directives = std::iter::once(deps.as_str().to_lowercase())
        .chain(
            ours.iter()
                .map(|c| format!("{c}={}", level.as_str().to_lowercase())),
        )
        .collect::<Vec<_>>()
        .join(",");
    EnvFilter::new(directives)
}

/// systemd sets JOURNAL_STREAM=<dev>:<inode> for the stream it gave us; it is inherited by
/// children whose stderr may point elsewhere, so only trust it when it matches stderr.
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // dev_t and ino_t are not u64 on every platform.
    #[allow(clippy::unnecessary_cast)]
    match nix::sys::stat::fstat(std::io::stderr()) {
        Ok(st) => st.st_dev as u64 == dev && st.st_ino as u64 == ino,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_level_keeps_dependencies_at_info() {
        let directives = |l| {
            filter(l)
                .to_string()
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let d = directives(tracing::Level::DEBUG);
        assert!(d.contains(&"info".to_string()), "{d:?}");
        assert!(d.contains(&"stolon=debug".to_string()), "{d:?}");
        let d = directives(tracing::Level::WARN);
        assert!(d.contains(&"warn".to_string()), "{d:?}");
        assert!(d.contains(&"stolon_keeper=warn".to_string()), "{d:?}");
    }
}
