//! Logging: human-readable lines on stderr, or structured entries to journald when systemd
//! connected our stderr to the journal.

mod journal;

pub use journal::POSTGRES_TARGET;

use crate::config::{LogSettings, Role};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The level filter, replaced on SIGHUP ([`set_level`]).
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// The journal's per-process fields, when logging to journald.
static JOURNAL: OnceLock<journal::Fields> = OnceLock::new();

/// Installs the global subscriber. Call once, after the configuration was validated, so a
/// configuration error stays the only line on stderr.
pub fn init(settings: &LogSettings) {
    let (filter, handle) = reload::Layer::new(filter(settings.level));
    let journal = stderr_is_journal()
        .then(|| journal::Fields::new(settings.binary, journal_fields(settings)).ok())
        .flatten();
    // try_init: a second init (tests calling role code twice) must not panic.
    let installed = match &journal {
        Some(fields) => tracing_subscriber::registry()
            .with(filter)
            .with(fields.layer())
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
    if installed.is_err() {
        return;
    }
    let _ = FILTER.set(handle);
    if let Some(fields) = journal {
        let _ = JOURNAL.set(fields);
    }
    if settings.deprecated_debug {
        tracing::warn!("--debug is deprecated, use --log-level=debug");
    }
}

/// Changes the log level of the running process (SIGHUP reload). False when logging was not
/// initialised by [`init`].
pub fn set_level(level: tracing::Level) -> bool {
    FILTER
        .get()
        .is_some_and(|h| h.reload(filter(level)).is_ok())
}

/// Adds `KEEPER_UID=<uid>` to every journal record from now on (no-op off the journal).
pub fn set_keeper_uid(uid: &str) {
    if let Some(f) = JOURNAL.get() {
        f.set("KEEPER_UID", Some(uid));
    }
}

/// Adds `DB_UID=<uid>` to every journal record from now on, or removes it with `None` (the
/// keeper's db changes on resync or when the sentinel takes it away).
pub fn set_db_uid(uid: Option<&str>) {
    if let Some(f) = JOURNAL.get() {
        f.set("DB_UID", uid);
    }
}

/// Whether records go to journald (for tests and the startup log line).
pub fn is_journald() -> bool {
    JOURNAL.get().is_some()
}

fn journal_fields(settings: &LogSettings) -> BTreeMap<&'static str, String> {
    let role = match settings.role {
        Role::Keeper => "keeper",
        Role::Sentinel => "sentinel",
        Role::Proxy => "proxy",
        Role::Ctl => "stolonctl",
    };
    let mut fields = BTreeMap::from([("ROLE", role.to_string())]);
    if let Some(name) = &settings.cluster_name {
        fields.insert("CLUSTER_NAME", name.clone());
    }
    fields
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
