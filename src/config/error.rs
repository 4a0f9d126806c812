//! Configuration errors, one line each, and how a binary reports any error at its edge.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A command-line syntax error reported by clap (first line only).
    #[error("{0}")]
    Usage(String),
    #[error("--{flag}: {reason}")]
    Invalid { flag: &'static str, reason: String },
    #[error("--{flag} is required (or set {env} or `{key}` in the config file)")]
    Missing {
        flag: &'static str,
        env: String,
        key: String,
    },
    #[error("config file {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("configuration: {0}")]
    Layers(String),
}

pub(crate) fn invalid(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        reason: reason.into(),
    }
}

/// What a binary does with an error at its edge: `error: <one line>` on stderr, exit 1.
pub fn exit_with_error(err: impl std::fmt::Display) -> std::process::ExitCode {
    let line = err.to_string().replace(['\n', '\r'], " ");
    eprintln!("error: {line}");
    std::process::ExitCode::FAILURE
}
