//! The layers merged into one [`Loaded`], and the settings every role shares.

use super::cli::Flags;
use super::error::{ConfigError, invalid};
use super::file::FileLayer;
use super::flags::{self, CONFIG, FlagDef, key_of};
use super::parse::{parse_bool, parse_duration, parse_port};
use super::role::{Role, RoleMarker};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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

        let env_config = role.env_name(CONFIG.name);
        let env_lookup = |name: &str| match &sources.env {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        };
        let explicit = given
            .get(CONFIG.name)
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
            if *flag != CONFIG.name {
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

    /// The merged value of a flag: the highest layer that sets it to something non-empty, else
    /// the flag's default, else `None`.
    pub(crate) fn get(&self, flag: &FlagDef) -> Option<String> {
        self.values
            .get_string(&key_of(flag.name))
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| flag.default.map(String::from))
    }

    pub(crate) fn require(&self, flag: &'static FlagDef) -> Result<String, ConfigError> {
        self.get(flag).ok_or_else(|| ConfigError::Missing {
            flag: flag.name,
            env: self.role.env_name(flag.name),
            key: flag.name.to_string(),
        })
    }

    /// A flag whose parsed value may be absent (no default and not set).
    pub(crate) fn parse_opt<T>(
        &self,
        flag: &'static FlagDef,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.get(flag)
            .map(|v| parse(&v).map_err(|reason| invalid(flag.name, reason)))
            .transpose()
    }

    /// A flag that always has a value: set, or its default; without either it is missing.
    pub(crate) fn parse<T>(
        &self,
        flag: &'static FlagDef,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let value = self.require(flag)?;
        parse(&value).map_err(|reason| invalid(flag.name, reason))
    }

    pub(crate) fn path(&self, flag: &'static FlagDef) -> Option<PathBuf> {
        self.get(flag).map(PathBuf::from)
    }

    /// The systemd credential named like `flag` (`LoadCredential=<flag>:…`), if the unit
    /// passed one: `$CREDENTIALS_DIRECTORY/<flag>`.
    pub(crate) fn credential(&self, flag: &'static FlagDef) -> Option<PathBuf> {
        self.credentials_dir
            .as_ref()
            .map(|dir| dir.join(flag.name))
            .filter(|path| path.exists())
    }

    /// A file flag, or else the systemd credential of the same name: how a unit running as a
    /// dynamic user gets a key only root can read.
    pub(crate) fn path_or_credential(&self, flag: &'static FlagDef) -> Option<PathBuf> {
        self.path(flag).or_else(|| self.credential(flag))
    }

    pub(crate) fn bool(&self, flag: &'static FlagDef) -> Result<bool, ConfigError> {
        self.parse(flag, parse_bool)
    }

    pub(crate) fn bool_opt(&self, flag: &'static FlagDef) -> Result<Option<bool>, ConfigError> {
        self.parse_opt(flag, parse_bool)
    }

    pub(crate) fn port(&self, flag: &'static FlagDef) -> Result<u16, ConfigError> {
        self.parse(flag, parse_port)
    }

    pub(crate) fn port_opt(&self, flag: &'static FlagDef) -> Result<Option<u16>, ConfigError> {
        self.parse_opt(flag, parse_port)
    }

    /// Seconds for the TCP keepalive flags: upstream refuses negative values.
    pub(crate) fn seconds(&self, flag: &'static FlagDef) -> Result<u32, ConfigError> {
        self.parse(flag, |v| match v.trim().parse::<i64>() {
            Ok(n) if n < 0 => Err(format!("must be positive (got {n})")),
            Ok(n) => u32::try_from(n).map_err(|_| format!("{n} is too large")),
            Err(_) => Err(format!("invalid number {v:?}")),
        })
    }

    pub(crate) fn duration(&self, flag: &'static FlagDef) -> Result<Duration, ConfigError> {
        self.parse(flag, parse_duration)
    }

    pub fn log_settings(&self) -> Result<LogSettings, ConfigError> {
        let level = match self.require(&flags::LOG_LEVEL)?.as_str() {
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
        let deprecated_debug = self.role != Role::Ctl && self.bool(&flags::DEBUG)?;
        Ok(LogSettings {
            level: if deprecated_debug {
                tracing::Level::DEBUG
            } else {
                level
            },
            color: if self.role == Role::Ctl {
                None
            } else {
                self.bool_opt(&flags::LOG_COLOR)?
            },
            deprecated_debug,
            binary: self.role.binary(),
            role: self.role,
            cluster_name: self.get(&flags::CLUSTER_NAME),
        })
    }

    /// `--metrics-listen-address`: `host:port`, `[v6]:port` or `:port` (every address), as
    /// upstream's Go server takes it; empty means none. Only the form is checked here: binding
    /// it is the daemon's (src/metrics/http.rs).
    pub fn metrics_listen_address(&self) -> Result<Option<String>, ConfigError> {
        self.listen_address(&flags::METRICS_LISTEN_ADDRESS)
    }

    /// `--api-listen-address` (the keeper's health checks), in the same forms; `None` for the
    /// roles without it.
    pub fn api_listen_address(&self) -> Result<Option<String>, ConfigError> {
        self.listen_address(&flags::API_LISTEN_ADDRESS)
    }

    fn listen_address(&self, flag: &'static FlagDef) -> Result<Option<String>, ConfigError> {
        let Some(addr) = self.get(flag).map(|a| a.trim().to_string()) else {
            return Ok(None);
        };
        if addr.is_empty() {
            return Ok(None);
        }
        let port = addr.rsplit_once(':').map(|(_, p)| p);
        match port.map(str::parse::<u16>) {
            Some(Ok(_)) => Ok(Some(addr)),
            _ => Err(invalid(
                flag.name,
                format!(
                    "{addr:?} is not host:port (e.g. 0.0.0.0:8080, or :8080 for every address)"
                ),
            )),
        }
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
