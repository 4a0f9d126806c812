//! The layers merged into one [`Loaded`], and the settings every role shares.

use super::cli::Flags;
use super::error::{ConfigError, invalid};
use super::file::FileLayer;
use super::flags::{CONFIG_FLAG, key_of};
use super::parse::parse_bool;
use super::role::{Role, RoleMarker};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The merged layers for one role; typed settings are parsed from it on demand.
#[derive(Clone)]
pub struct Loaded {
    pub(super) role: Role,
    values: config::Config,
    /// The file that was read, if any (for logs).
    pub file: Option<PathBuf>,
    /// `$CREDENTIALS_DIRECTORY`: systemd's `LoadCredential=` files, read for passwords not
    /// given otherwise.
    pub(super) credentials_dir: Option<PathBuf>,
    /// Flags given on the command line, where every local user can read them (`ps`).
    pub(super) on_command_line: Vec<&'static str>,
}

/// Without the values: they may hold passwords.
impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("role", &self.role)
            .field("file", &self.file)
            .field("credentials_dir", &self.credentials_dir)
            .finish_non_exhaustive()
    }
}

/// Where the layers come from; tests substitute the environment and the default file.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `None`: the process environment.
    pub env: Option<config::Map<String, String>>,
    /// `None`: the role's `/etc/stolon/<role>.toml`.
    pub default_file: Option<PathBuf>,
}

impl Loaded {
    pub fn load<R: RoleMarker>(flags: &Flags<R>) -> Result<Loaded, ConfigError> {
        Self::load_from(R::ROLE, &flags.given, Sources::default())
    }

    pub fn load_from(
        role: Role,
        given: &BTreeMap<&'static str, String>,
        sources: Sources,
    ) -> Result<Loaded, ConfigError> {
        let layer_err = |e: config::ConfigError| ConfigError::Layers(e.to_string());
        let mut builder = config::Config::builder();
        for def in role.flags() {
            if let Some(default) = def.default {
                builder = builder
                    .set_default(key_of(def.name), default)
                    .map_err(layer_err)?;
            }
        }

        let env_config = role.env_name(CONFIG_FLAG);
        let env_lookup = |name: &str| match &sources.env {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        };
        let explicit = given
            .get(CONFIG_FLAG)
            .cloned()
            .or_else(|| env_lookup(&env_config).filter(|v| !v.is_empty()))
            .map(PathBuf::from);
        let file = match explicit {
            Some(path) => Some(path),
            None => {
                let default = sources
                    .default_file
                    .clone()
                    .unwrap_or_else(|| role.default_config_path());
                default.exists().then_some(default)
            }
        };
        if let Some(path) = &file {
            builder = builder.add_source(FileLayer::read(role, path)?);
        }

        // Empty variables count as unset, as upstream (cobra) treats them.
        builder = builder.add_source(
            config::Environment::with_prefix(role.env_prefix())
                .prefix_separator("_")
                .ignore_empty(true)
                .try_parsing(false)
                .source(sources.env.clone()),
        );

        for (flag, value) in given {
            if *flag != CONFIG_FLAG {
                builder = builder
                    .set_override(key_of(flag), value.as_str())
                    .map_err(layer_err)?;
            }
        }
        let values = builder.build().map_err(layer_err)?;
        let credentials_dir = env_lookup("CREDENTIALS_DIRECTORY")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Ok(Loaded {
            role,
            values,
            file,
            credentials_dir,
            on_command_line: given.keys().copied().collect(),
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The merged value of a flag, `None` when no layer sets it or it is empty.
    pub fn get(&self, flag: &str) -> Option<String> {
        self.values
            .get_string(&key_of(flag))
            .ok()
            .filter(|v| !v.is_empty())
    }

    pub(super) fn require(&self, flag: &'static str) -> Result<String, ConfigError> {
        self.get(flag).ok_or_else(|| ConfigError::Missing {
            flag,
            env: self.role.env_name(flag),
            key: flag.to_string(),
        })
    }

    pub(super) fn bool(&self, flag: &'static str) -> Result<Option<bool>, ConfigError> {
        self.get(flag).map(|v| parse_bool(flag, &v)).transpose()
    }

    pub(super) fn bool_or(&self, flag: &'static str, default: bool) -> Result<bool, ConfigError> {
        Ok(self.bool(flag)?.unwrap_or(default))
    }

    pub(super) fn port(&self, flag: &'static str) -> Result<Option<u16>, ConfigError> {
        self.get(flag)
            .map(|v| match v.trim().parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(invalid(
                    flag,
                    format!("invalid port {v:?} (use a number from 1 to 65535)"),
                )),
            })
            .transpose()
    }

    /// Seconds for the TCP keepalive flags: upstream refuses negative values.
    pub(super) fn seconds(&self, flag: &'static str) -> Result<u32, ConfigError> {
        let Some(v) = self.get(flag) else {
            return Ok(0);
        };
        match v.trim().parse::<i64>() {
            Ok(n) if n < 0 => Err(invalid(flag, format!("must be positive (got {n})"))),
            Ok(n) => u32::try_from(n).map_err(|_| invalid(flag, format!("{n} is too large"))),
            Err(_) => Err(invalid(flag, format!("invalid number {v:?}"))),
        }
    }

    pub fn log_settings(&self) -> Result<LogSettings, ConfigError> {
        let level = match self.get("log-level").as_deref().unwrap_or("info") {
            "debug" => tracing::Level::DEBUG,
            "info" => tracing::Level::INFO,
            "warn" => tracing::Level::WARN,
            "error" => tracing::Level::ERROR,
            other => {
                return Err(invalid(
                    "log-level",
                    format!("unknown log level {other:?} (use debug, info, warn or error)"),
                ));
            }
        };
        let deprecated_debug = self.role != Role::Ctl && self.bool_or("debug", false)?;
        Ok(LogSettings {
            level: if deprecated_debug {
                tracing::Level::DEBUG
            } else {
                level
            },
            color: if self.role == Role::Ctl {
                None
            } else {
                self.bool("log-color")?
            },
            deprecated_debug,
            binary: self.role.binary(),
            role: self.role,
            cluster_name: self.get("cluster-name"),
        })
    }

    /// `--metrics-listen-address`: accepted for compatibility; nothing serves metrics yet.
    pub fn metrics_listen_address(&self) -> Option<String> {
        self.get("metrics-listen-address")
    }
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: tracing::Level,
    /// `None`: colour when stderr is a terminal.
    pub color: Option<bool>,
    /// `--debug` was given: logged as deprecated once logging is up.
    pub deprecated_debug: bool,
    /// The journald identifier.
    pub binary: &'static str,
    /// For the journal's ROLE field.
    pub role: Role,
    /// For the journal's CLUSTER_NAME field (absent until validated by `store_config`).
    pub cluster_name: Option<String>,
}
