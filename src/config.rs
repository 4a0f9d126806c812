//! Configuration of the four binaries (reference §1): defaults < TOML file < `ST<ROLE>_*`
//! environment < command-line flags, layered with the `config` crate.
//!
//! One table per role lists every flag with its default; clap, the environment and the file
//! are all driven by it, so a flag cannot exist in one place and be forgotten in another.
//! Every value travels through the layers as a string and is parsed once, here, so a bad
//! value gets a one-line error naming the flag whichever layer it came from.

use crate::cluster::{ClusterSpec, GoDuration};
use crate::keeper::{AuthMethod, KeeperConfig};
use crate::proxy::ProxyConfig;
use crate::sentinel::SentinelConfig;
use crate::store::{DEFAULT_ENDPOINT, StoreBackend, StoreConfig, StoreError};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Keeper,
    Sentinel,
    Proxy,
    Ctl,
}

impl Role {
    pub fn binary(self) -> &'static str {
        match self {
            Role::Keeper => "stolon-keeper",
            Role::Sentinel => "stolon-sentinel",
            Role::Proxy => "stolon-proxy",
            Role::Ctl => "stolonctl",
        }
    }

    /// Upstream's environment prefixes (`STKEEPER_PG_PORT`, `STOLONCTL_CLUSTER_NAME`, ...).
    pub fn env_prefix(self) -> &'static str {
        match self {
            Role::Keeper => "STKEEPER",
            Role::Sentinel => "STSENTINEL",
            Role::Proxy => "STPROXY",
            Role::Ctl => "STOLONCTL",
        }
    }

    /// Read when it exists and no `--config` was given.
    pub fn default_config_path(self) -> PathBuf {
        let name = match self {
            Role::Keeper => "keeper",
            Role::Sentinel => "sentinel",
            Role::Proxy => "proxy",
            Role::Ctl => "stolonctl",
        };
        PathBuf::from(format!("/etc/stolon/{name}.toml"))
    }

    pub fn flags(self) -> impl Iterator<Item = &'static FlagDef> {
        let own: &[&[FlagDef]] = match self {
            Role::Keeper => &[DAEMON_FLAGS, KEEPER_FLAGS],
            Role::Sentinel => &[DAEMON_FLAGS, SENTINEL_FLAGS],
            Role::Proxy => &[DAEMON_FLAGS, PROXY_FLAGS],
            Role::Ctl => &[CTL_FLAGS],
        };
        COMMON_FLAGS.iter().chain(own.iter().flat_map(|t| t.iter()))
    }

    fn env_name(self, flag: &str) -> String {
        format!("{}_{}", self.env_prefix(), key_of(flag).to_uppercase())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    Text,
    /// `--flag` means true; `--flag=false` is accepted as with Go's flag package.
    Bool,
}

#[derive(Debug)]
pub struct FlagDef {
    pub name: &'static str,
    pub kind: FlagKind,
    pub default: Option<&'static str>,
    pub help: &'static str,
    pub hidden: bool,
}

const fn text(name: &'static str, default: Option<&'static str>, help: &'static str) -> FlagDef {
    FlagDef {
        name,
        kind: FlagKind::Text,
        default,
        help,
        hidden: false,
    }
}

const fn boolean(name: &'static str, default: Option<&'static str>, help: &'static str) -> FlagDef {
    FlagDef {
        name,
        kind: FlagKind::Bool,
        default,
        help,
        hidden: false,
    }
}

const fn hidden(def: FlagDef) -> FlagDef {
    FlagDef {
        hidden: true,
        ..def
    }
}

/// The file that holds the other settings; itself only a flag or `ST<ROLE>_CONFIG`.
const CONFIG_FLAG: &str = "config";

const COMMON_FLAGS: &[FlagDef] = &[
    text(
        CONFIG_FLAG,
        None,
        // Keep in step with shutdown::RELOADS.
        "TOML file with flag names as keys (default /etc/stolon/<role>.toml if it exists); SIGHUP re-reads it and applies log-level, other settings apply at restart",
    ),
    text("cluster-name", None, "cluster name (required)"),
    text("store-backend", None, "store backend type (etcdv3)"),
    text(
        "store-endpoints",
        Some(DEFAULT_ENDPOINT),
        "comma separated list of store endpoints",
    ),
    text("store-timeout", Some("5s"), "store request timeout"),
    text(
        "store-prefix",
        Some("stolon/cluster"),
        "the store base prefix",
    ),
    text(
        "store-cert-file",
        None,
        "certificate file for client identification to the store",
    ),
    text(
        "store-key",
        None,
        "private key file for client identification to the store",
    ),
    text(
        "store-ca-file",
        None,
        "verify certificates of HTTPS-enabled store servers using this CA bundle",
    ),
    boolean(
        "store-skip-tls-verify",
        Some("false"),
        "skip store certificate verification (insecure!)",
    ),
    text(
        "metrics-listen-address",
        None,
        "metrics listen address (not implemented yet: accepted and ignored)",
    ),
    text(
        "kube-resource-kind",
        None,
        "kubernetes resource kind (the kubernetes backend is not supported)",
    ),
    text("log-level", Some("info"), "debug, info, warn or error"),
];

const DAEMON_FLAGS: &[FlagDef] = &[
    boolean(
        "log-color",
        None,
        "colour the log output (default: when stderr is a terminal)",
    ),
    hidden(boolean(
        "debug",
        Some("false"),
        "deprecated: use --log-level=debug",
    )),
];

const CTL_FLAGS: &[FlagDef] = &[
    text(
        "kubeconfig",
        None,
        "path to kubeconfig file (kubernetes backend: not supported)",
    ),
    text(
        "kube-context",
        None,
        "kubernetes context (kubernetes backend: not supported)",
    ),
    text(
        "kube-namespace",
        None,
        "kubernetes namespace (kubernetes backend: not supported)",
    ),
];

const KEEPER_FLAGS: &[FlagDef] = &[
    text(
        "uid",
        None,
        "keeper uid (must be unique in the cluster; a-z, 0-9 and _ only)",
    ),
    hidden(text("id", None, "deprecated alias of --uid")),
    text("data-dir", None, "data directory (required)"),
    text(
        "pg-listen-address",
        None,
        "postgresql instance listening address (required)",
    ),
    text(
        "pg-advertise-address",
        None,
        "postgresql instance address from outside (default: --pg-listen-address)",
    ),
    text(
        "pg-port",
        Some("5432"),
        "postgresql instance listening port",
    ),
    text(
        "pg-advertise-port",
        None,
        "postgresql instance port from outside (default: --pg-port)",
    ),
    text(
        "pg-bin-path",
        None,
        "absolute path to postgresql binaries (default: $PATH)",
    ),
    text(
        "pg-repl-auth-method",
        Some("md5"),
        "replication user auth method: md5, scram-sha-256 or trust",
    ),
    text(
        "pg-repl-username",
        None,
        "postgres replication user name (required)",
    ),
    text(
        "pg-repl-password",
        None,
        "postgres replication user password",
    ),
    text(
        "pg-repl-passwordfile",
        None,
        "postgres replication user password file",
    ),
    text(
        "pg-su-auth-method",
        Some("md5"),
        "superuser auth method: md5, scram-sha-256 or trust",
    ),
    text(
        "pg-su-username",
        None,
        "postgres superuser name (default: the effective OS user)",
    ),
    text("pg-su-password", None, "postgres superuser password"),
    text(
        "pg-su-passwordfile",
        None,
        "postgres superuser password file",
    ),
    boolean(
        "can-be-master",
        Some("true"),
        "whether this keeper may be elected master",
    ),
    boolean(
        "can-be-synchronous-replica",
        Some("true"),
        "whether this keeper may be chosen as synchronous replica",
    ),
    boolean(
        "disable-data-dir-locking",
        Some("false"),
        "do not lock the data dir",
    ),
];

const SENTINEL_FLAGS: &[FlagDef] = &[text(
    "initial-cluster-spec",
    None,
    "JSON cluster spec file used to initialise the cluster when no cluster data exists",
)];

const PROXY_FLAGS: &[FlagDef] = &[
    text(
        "listen-address",
        Some("127.0.0.1"),
        "proxy listening address (unused when systemd passes sockets: socket activation)",
    ),
    text(
        "port",
        Some("5432"),
        "proxy listening port (unused when systemd passes sockets: socket activation)",
    ),
    boolean(
        "stop-listening",
        Some("true"),
        "stop listening when the store cannot be read for proxyTimeout; a socket passed by systemd (socket activation) is never closed: while there is no master the proxy accepts and at once closes every client on it",
    ),
    text(
        "tcp-keepalive-idle",
        Some("0"),
        "seconds before the first keepalive probe (0 = OS default)",
    ),
    text(
        "tcp-keepalive-count",
        Some("0"),
        "keepalive probes before dropping (0 = OS default)",
    ),
    text(
        "tcp-keepalive-interval",
        Some("0"),
        "seconds between keepalive probes (0 = OS default)",
    ),
];

/// The key a flag has in the layers: the environment can only produce `_`.
fn key_of(flag: &str) -> String {
    flag.replace('-', "_")
}

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

fn invalid(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        reason: reason.into(),
    }
}

/// Marks which role's flag table a [`Flags`] uses.
pub trait RoleMarker {
    const ROLE: Role;
}

macro_rules! role_marker {
    ($name:ident, $role:expr) => {
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;
        impl RoleMarker for $name {
            const ROLE: Role = $role;
        }
    };
}
role_marker!(KeeperRole, Role::Keeper);
role_marker!(SentinelRole, Role::Sentinel);
role_marker!(ProxyRole, Role::Proxy);
role_marker!(CtlRole, Role::Ctl);

/// The role's flags as given on the command line (and only those: no clap defaults, so
/// "given" is known and the lower layers can fill the rest).
#[derive(Debug, Clone)]
pub struct Flags<R> {
    pub given: BTreeMap<&'static str, String>,
    _role: PhantomData<R>,
}

impl<R> Default for Flags<R> {
    fn default() -> Self {
        Flags {
            given: BTreeMap::new(),
            _role: PhantomData,
        }
    }
}

impl<R: RoleMarker> clap::FromArgMatches for Flags<R> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Flags::default();
        flags.update_from_arg_matches(m)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        for def in R::ROLE.flags() {
            if let Ok(Some(v)) = m.try_get_one::<String>(def.name) {
                self.given.insert(def.name, v.clone());
            }
        }
        Ok(())
    }
}

impl<R: RoleMarker> clap::Args for Flags<R> {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        // stolonctl's flags work before and after the sub-command, as cobra's persistent flags.
        let global = R::ROLE == Role::Ctl;
        for def in R::ROLE.flags() {
            let help = match def.default {
                Some(d) => format!("{} [default: {d}]", def.help),
                None => def.help.to_string(),
            };
            let mut arg = clap::Arg::new(def.name)
                .long(def.name)
                .help(help)
                .value_name("VALUE")
                .hide(def.hidden)
                .global(global)
                .action(clap::ArgAction::Set)
                // Repeating a flag: the last one wins, as with Go's flag package.
                .overrides_with(def.name);
            if def.kind == FlagKind::Bool {
                arg = arg
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true")
                    .value_name("BOOL");
            }
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Turns a clap error into the one-line form every other error has; help and version are
/// printed and the process exits 0, as clap would.
pub fn usage_error(e: clap::Error) -> ConfigError {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    // The message is the first paragraph (the usage and tips follow a blank line).
    let text = e.to_string();
    let message = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    ConfigError::Usage(message.trim_start_matches("error: ").to_string())
}

/// The merged layers for one role; typed settings are parsed from it on demand.
#[derive(Clone)]
pub struct Loaded {
    role: Role,
    values: config::Config,
    /// The file that was read, if any (for logs).
    pub file: Option<PathBuf>,
    /// `$CREDENTIALS_DIRECTORY`: systemd's `LoadCredential=` files, read for passwords not
    /// given otherwise.
    credentials_dir: Option<PathBuf>,
    /// Flags given on the command line, where every local user can read them (`ps`).
    on_command_line: Vec<&'static str>,
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

    fn require(&self, flag: &'static str) -> Result<String, ConfigError> {
        self.get(flag).ok_or_else(|| ConfigError::Missing {
            flag,
            env: self.role.env_name(flag),
            key: flag.to_string(),
        })
    }

    fn bool(&self, flag: &'static str) -> Result<Option<bool>, ConfigError> {
        self.get(flag).map(|v| parse_bool(flag, &v)).transpose()
    }

    fn bool_or(&self, flag: &'static str, default: bool) -> Result<bool, ConfigError> {
        Ok(self.bool(flag)?.unwrap_or(default))
    }

    fn port(&self, flag: &'static str) -> Result<Option<u16>, ConfigError> {
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
    fn seconds(&self, flag: &'static str) -> Result<u32, ConfigError> {
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

    pub fn store_config(&self) -> Result<StoreConfig, ConfigError> {
        let cluster_name = self.require("cluster-name")?;
        let backend = match self.get("store-backend") {
            None => {
                return Err(ConfigError::Missing {
                    flag: "store-backend",
                    env: self.role.env_name("store-backend"),
                    key: "store-backend".into(),
                });
            }
            Some(b) => StoreBackend::parse(&b).map_err(|e| match e {
                StoreError::Config(msg) => invalid("store-backend", msg),
                other => invalid("store-backend", other.to_string()),
            })?,
        };
        let endpoints = parse_endpoints(
            self.get("store-endpoints")
                .as_deref()
                .unwrap_or(DEFAULT_ENDPOINT),
        )
        .map_err(|r| invalid("store-endpoints", r))?;
        let timeout = self
            .get("store-timeout")
            .map(|v| parse_duration("store-timeout", &v))
            .transpose()?
            .unwrap_or(std::time::Duration::from_secs(5));
        if timeout.is_zero() {
            return Err(invalid("store-timeout", "must be greater than 0"));
        }
        Ok(StoreConfig {
            backend,
            endpoints,
            timeout,
            prefix: self
                .get("store-prefix")
                .unwrap_or_else(|| "stolon/cluster".into()),
            cluster_name,
            cert_file: self.get("store-cert-file").map(PathBuf::from),
            key_file: self.get("store-key").map(PathBuf::from),
            ca_file: self.get("store-ca-file").map(PathBuf::from),
            skip_tls_verify: self.bool_or("store-skip-tls-verify", false)?,
        })
    }

    pub fn keeper_config(&self) -> Result<KeeperConfig, ConfigError> {
        let uid = match self.get("uid") {
            Some(uid) => Some(("uid", uid)),
            None => self.get("id").map(|id| ("id", id)),
        };
        let uid = match uid {
            Some((flag, uid)) => {
                if !is_valid_keeper_uid(&uid) {
                    let flag = if flag == "uid" { "uid" } else { "id" };
                    return Err(invalid(
                        flag,
                        format!("invalid keeper uid {uid:?}: only a-z, 0-9 and _ are allowed"),
                    ));
                }
                Some(uid)
            }
            None => None,
        };
        let data_dir = PathBuf::from(self.require("data-dir")?);
        let pg_listen_address = self.require("pg-listen-address")?;
        let pg_port = self.port("pg-port")?.unwrap_or(5432);
        let pg_repl_auth_method = self.auth_method("pg-repl-auth-method")?;
        let pg_su_auth_method = self.auth_method("pg-su-auth-method")?;
        let pg_repl_username = self.require("pg-repl-username")?;
        let pg_su_username = match self.get("pg-su-username") {
            Some(u) => u,
            None => effective_user().map_err(|r| invalid("pg-su-username", r))?,
        };
        let pg_repl_password = self.password(
            "replication",
            pg_repl_auth_method,
            "pg-repl-password",
            "pg-repl-passwordfile",
            "pg-repl-auth-method",
        )?;
        let pg_su_password = self.password(
            "superuser",
            pg_su_auth_method,
            "pg-su-password",
            "pg-su-passwordfile",
            "pg-su-auth-method",
        )?;
        if pg_su_username == pg_repl_username {
            tracing::warn!(
                user = %pg_su_username,
                "superuser name and replication user name are the same; prefer distinct users"
            );
            if pg_su_auth_method != pg_repl_auth_method {
                return Err(invalid(
                    "pg-su-auth-method",
                    "superuser and replication user are the same but their auth methods differ",
                ));
            }
            if pg_su_auth_method != AuthMethod::Trust && pg_su_password != pg_repl_password {
                return Err(invalid(
                    "pg-su-password",
                    "provided superuser name and replication user name are the same but provided passwords are different",
                ));
            }
        }
        Ok(KeeperConfig {
            uid,
            data_dir,
            pg_advertise_address: self.get("pg-advertise-address"),
            pg_listen_address,
            pg_port,
            pg_advertise_port: self.port("pg-advertise-port")?,
            pg_bin_path: self.get("pg-bin-path").map(PathBuf::from),
            pg_repl_auth_method,
            pg_repl_username,
            pg_repl_password,
            pg_su_auth_method,
            pg_su_username,
            pg_su_password,
            can_be_master: self.bool_or("can-be-master", true)?,
            can_be_synchronous_replica: self.bool_or("can-be-synchronous-replica", true)?,
            disable_data_dir_locking: self.bool_or("disable-data-dir-locking", false)?,
        })
    }

    fn auth_method(&self, flag: &'static str) -> Result<AuthMethod, ConfigError> {
        self.get(flag)
            .as_deref()
            .unwrap_or("md5")
            .parse::<AuthMethod>()
            .map_err(|r| invalid(flag, r))
    }

    /// Exactly one of password / password file unless the method is trust (then neither). With
    /// neither given, the systemd credential named like the password flag (`pg-su-password`,
    /// `pg-repl-password`) is used when `$CREDENTIALS_DIRECTORY` holds it.
    fn password(
        &self,
        who: &str,
        method: AuthMethod,
        pw_flag: &'static str,
        file_flag: &'static str,
        method_flag: &'static str,
    ) -> Result<Option<String>, ConfigError> {
        let inline = self.get(pw_flag);
        let file = self.get(file_flag);
        if inline.is_some() && self.on_command_line.contains(&pw_flag) {
            tracing::warn!(
                "--{pw_flag} on the command line is visible to every local user (ps); prefer --{file_flag} or a systemd credential named {pw_flag}"
            );
        }
        let credential = self
            .credentials_dir
            .as_ref()
            .map(|dir| dir.join(pw_flag))
            .filter(|path| path.exists());
        if method == AuthMethod::Trust {
            if inline.is_some() || file.is_some() {
                return Err(invalid(
                    method_flag,
                    format!(
                        "{who} auth method is trust but a password was given (drop --{pw_flag}/--{file_flag})"
                    ),
                ));
            }
            return Ok(None);
        }
        match (inline, file) {
            (Some(_), Some(_)) => Err(invalid(
                file_flag,
                format!("give only one of --{pw_flag} and --{file_flag}"),
            )),
            (Some(pw), None) => Ok(Some(pw)),
            (None, Some(path)) => read_password_file(Path::new(&path), who)
                .map(Some)
                .map_err(|r| invalid(file_flag, r)),
            (None, None) => match credential {
                Some(path) => read_password_file(&path, who)
                    .map(Some)
                    .map_err(|r| invalid(pw_flag, format!("systemd credential: {r}"))),
                None => Err(invalid(
                    pw_flag,
                    format!(
                        "a {who} password is required with auth method {}: set --{pw_flag} or --{file_flag}, or pass a systemd credential named {pw_flag} (LoadCredential=)",
                        method.as_hba()
                    ),
                )),
            },
        }
    }

    pub fn sentinel_config(&self) -> Result<SentinelConfig, ConfigError> {
        let initial_cluster_spec = self.get("initial-cluster-spec").map(PathBuf::from);
        // Checked at start, as upstream: a broken file should stop the sentinel now, not
        // when the cluster first needs initialising.
        if let Some(path) = &initial_cluster_spec {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "initial-cluster-spec",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            ClusterSpec::from_json(&text)
                .and_then(|spec| spec.validate())
                .map_err(|e| {
                    invalid(
                        "initial-cluster-spec",
                        format!("{}: invalid cluster spec: {e}", path.display()),
                    )
                })?;
        }
        Ok(SentinelConfig {
            initial_cluster_spec,
        })
    }

    pub fn proxy_config(&self) -> Result<ProxyConfig, ConfigError> {
        Ok(ProxyConfig {
            listen_address: self
                .get("listen-address")
                .unwrap_or_else(|| "127.0.0.1".into()),
            port: self.port("port")?.unwrap_or(5432),
            stop_listening: self.bool_or("stop-listening", true)?,
            tcp_keepalive_idle: self.seconds("tcp-keepalive-idle")?,
            tcp_keepalive_count: self.seconds("tcp-keepalive-count")?,
            tcp_keepalive_interval: self.seconds("tcp-keepalive-interval")?,
        })
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

/// The TOML file as a layer: keys are flag names in either spelling (`store-endpoints` or
/// `store_endpoints`); unknown keys are refused so a typo does not silently do nothing.
#[derive(Debug, Clone)]
struct FileLayer {
    origin: String,
    values: config::Map<String, String>,
}

impl FileLayer {
    fn read(role: Role, path: &Path) -> Result<FileLayer, ConfigError> {
        let file_err = |reason: String| ConfigError::File {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let msg = e.message().trim().replace('\n', " ");
            file_err(match line {
                Some(l) => format!("line {l}: {msg}"),
                None => msg,
            })
        })?;
        let mut values = config::Map::new();
        for (key, value) in table {
            let flag = key.replace('_', "-");
            if flag == CONFIG_FLAG || !role.flags().any(|d| d.name == flag) {
                return Err(file_err(format!(
                    "unknown key {key:?} (keys are {} flag names)",
                    role.binary()
                )));
            }
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                // A list is natural for store-endpoints; any list is joined as the flag would be.
                toml::Value::Array(items) => items
                    .iter()
                    .map(|i| match i {
                        toml::Value::String(s) => Ok(s.clone()),
                        other => Err(file_err(format!(
                            "{key}: list items must be strings, got {other}"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                other => {
                    return Err(file_err(format!(
                        "{key}: expected a string, number or boolean, got {}",
                        other.type_str()
                    )));
                }
            };
            values.insert(key_of(&flag), value);
        }
        Ok(FileLayer {
            origin: path.display().to_string(),
            values,
        })
    }
}

impl config::Source for FileLayer {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        Ok(self
            .values
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    config::Value::new(Some(&self.origin), config::ValueKind::String(v.clone())),
                )
            })
            .collect())
    }
}

/// Go's strconv.ParseBool, which upstream's flags use.
fn parse_bool(flag: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(invalid(
            flag,
            format!("invalid boolean {other:?} (use true or false)"),
        )),
    }
}

fn parse_duration(flag: &'static str, v: &str) -> Result<std::time::Duration, ConfigError> {
    let d = GoDuration::parse(v.trim())
        .map_err(|e| invalid(flag, format!("invalid duration {v:?}: {e}")))?;
    if d.is_negative() {
        return Err(invalid(flag, format!("must be positive (got {d})")));
    }
    Ok(d.to_std())
}

/// Upstream: comma list; http or https, or no scheme (= http); all with the same scheme.
/// Checked here too (the store checks again at connect) so the error comes before anything
/// is logged and names the flag.
fn parse_endpoints(list: &str) -> Result<Vec<String>, String> {
    let endpoints = StoreConfig::endpoints_from_flag(list);
    let mut scheme: Option<&str> = None;
    for e in &endpoints {
        let this = match e.split_once("://") {
            Some((s @ ("http" | "https"), rest)) if !rest.is_empty() => s,
            _ => {
                return Err(format!(
                    "endpoint {e:?}: unsupported scheme (use http:// or https://)"
                ));
            }
        };
        match scheme {
            Some(s) if s != this => {
                return Err(format!(
                    "all endpoints must use the same scheme ({e:?} is {this}, others {s})"
                ));
            }
            _ => scheme = Some(this),
        }
    }
    Ok(endpoints)
}

/// Upstream's `^[a-z0-9_]+$`.
pub fn is_valid_keeper_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn effective_user() -> Result<String, String> {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => Ok(user.name),
        Ok(None) => Err(format!(
            "effective user id {uid} has no name; set --pg-su-username"
        )),
        Err(e) => Err(format!(
            "cannot look up effective user {uid}: {e}; set --pg-su-username"
        )),
    }
}

/// Reads a password file as upstream does: warns when others can read it, strips trailing
/// newlines with a warning (editors add one) and refuses an empty password.
pub fn read_password_file(path: &Path, who: &str) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {who} password file {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "{who} password file permissions are too open; use 0600 or stricter"
        );
    }
    let raw = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {who} password file {}: {e}", path.display()))?;
    let trimmed = raw.trim_end_matches(['\r', '\n']);
    if trimmed.len() != raw.len() {
        tracing::warn!(file = %path.display(), "{who} password contains trailing new line, removing");
    }
    if trimmed.is_empty() {
        return Err(format!(
            "{who} password file {} is empty after removing trailing new line",
            path.display()
        ));
    }
    Ok(trimmed.to_string())
}

/// What a binary does with an error at its edge: `error: <one line>` on stderr, exit 1.
pub fn exit_with_error(err: impl std::fmt::Display) -> std::process::ExitCode {
    let line = err.to_string().replace(['\n', '\r'], " ");
    eprintln!("error: {line}");
    std::process::ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn flags(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    fn env(pairs: &[(&str, &str)]) -> Option<config::Map<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn no_file() -> Option<PathBuf> {
        Some(PathBuf::from("/nonexistent/stolon-test.toml"))
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn load(
        role: Role,
        given: &[(&'static str, &str)],
        env_pairs: &[(&str, &str)],
        file: Option<&Path>,
    ) -> Result<Loaded, ConfigError> {
        Loaded::load_from(
            role,
            &flags(given),
            Sources {
                env: env(env_pairs),
                default_file: file.map(Path::to_path_buf).or_else(no_file),
            },
        )
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let l = load(
            Role::Sentinel,
            &[("cluster-name", "c"), ("store-backend", "etcdv3")],
            &[],
            None,
        )
        .unwrap();
        let s = l.store_config().unwrap();
        assert_eq!(s.timeout, std::time::Duration::from_secs(5));
        assert_eq!(s.prefix, "stolon/cluster");
        assert_eq!(s.endpoints, vec!["http://127.0.0.1:2379".to_string()]);
        assert_eq!(l.log_settings().unwrap().level, tracing::Level::INFO);
    }

    #[test]
    fn precedence_flags_over_env_over_file_over_defaults() {
        let f = toml_file(
            "cluster-name = \"file\"\nstore_backend = \"etcdv3\"\nstore-prefix = \"fileprefix\"\n\
             store-timeout = \"7s\"\nlog-level = \"warn\"\n",
        );
        let env_pairs = [
            ("STSENTINEL_STORE_PREFIX", "envprefix"),
            ("STSENTINEL_CLUSTER_NAME", "env"),
        ];
        let l = load(
            Role::Sentinel,
            &[("cluster-name", "flag")],
            &env_pairs,
            Some(f.path()),
        )
        .unwrap();
        let s = l.store_config().unwrap();
        assert_eq!(s.cluster_name, "flag", "flag beats env and file");
        assert_eq!(s.prefix, "envprefix", "env beats file");
        assert_eq!(
            s.timeout,
            std::time::Duration::from_secs(7),
            "file beats default"
        );
        assert_eq!(
            s.backend,
            StoreBackend::Etcdv3,
            "underscore spelling accepted"
        );
        assert_eq!(l.log_settings().unwrap().level, tracing::Level::WARN);
        assert_eq!(l.file.as_deref(), Some(f.path()));
    }

    #[test]
    fn explicit_config_path_from_flag_or_env() {
        let f = toml_file("cluster-name = \"fromfile\"\n");
        let path = f.path().to_str().unwrap();
        let l = load(Role::Proxy, &[("config", path)], &[], None).unwrap();
        assert_eq!(l.get("cluster-name").as_deref(), Some("fromfile"));
        let l = load(Role::Proxy, &[], &[("STPROXY_CONFIG", path)], None).unwrap();
        assert_eq!(l.get("cluster-name").as_deref(), Some("fromfile"));
        let e = load(Role::Proxy, &[("config", "/nonexistent/x.toml")], &[], None).unwrap_err();
        assert!(
            e.to_string().starts_with("config file /nonexistent/x.toml"),
            "{e}"
        );
    }

    #[test]
    fn other_roles_env_is_ignored() {
        let l = load(Role::Keeper, &[], &[("STPROXY_CLUSTER_NAME", "x")], None).unwrap();
        assert_eq!(l.get("cluster-name"), None);
    }

    #[test]
    fn empty_env_counts_as_unset() {
        let l = load(Role::Proxy, &[], &[("STPROXY_STORE_PREFIX", "")], None).unwrap();
        assert_eq!(l.get("store-prefix").as_deref(), Some("stolon/cluster"));
    }

    #[test]
    fn unknown_file_key_refused() {
        let f = toml_file("cluster-nmae = \"x\"\n");
        let e = load(Role::Proxy, &[], &[], Some(f.path())).unwrap_err();
        assert!(
            e.to_string().contains("unknown key \"cluster-nmae\""),
            "{e}"
        );
        // A keeper flag is not a proxy setting.
        let f = toml_file("data-dir = \"/x\"\n");
        assert!(load(Role::Proxy, &[], &[], Some(f.path())).is_err());
    }

    #[test]
    fn bad_toml_is_one_line() {
        let f = toml_file("cluster-name = \n");
        let e = load(Role::Proxy, &[], &[], Some(f.path()))
            .unwrap_err()
            .to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn endpoints_list_in_file() {
        let f = toml_file(
            "store-endpoints = [\"127.0.0.1:1\", \"http://127.0.0.2:2\"]\ncluster-name=\"c\"\nstore-backend=\"etcdv3\"\n",
        );
        let s = load(Role::Proxy, &[], &[], Some(f.path()))
            .unwrap()
            .store_config()
            .unwrap();
        assert_eq!(
            s.endpoints,
            vec!["http://127.0.0.1:1", "http://127.0.0.2:2"]
        );
    }

    fn store_err(given: &[(&'static str, &str)]) -> String {
        let mut all = vec![("cluster-name", "c"), ("store-backend", "etcdv3")];
        all.extend_from_slice(given);
        load(Role::Sentinel, &all, &[], None)
            .unwrap()
            .store_config()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn store_flag_errors_name_the_flag() {
        for b in ["etcd", "etcdv2", "consul", "kubernetes"] {
            let e = store_err(&[("store-backend", b)]);
            assert!(
                e.starts_with("--store-backend")
                    && e.contains("not supported by this stolon; use etcdv3"),
                "{e}"
            );
        }
        assert!(store_err(&[("store-backend", "zookeeper")]).contains("unknown store backend"));
        assert!(
            store_err(&[("store-timeout", "-1s")]).starts_with("--store-timeout: must be positive")
        );
        assert!(
            store_err(&[("store-timeout", "soon")])
                .starts_with("--store-timeout: invalid duration")
        );
        assert!(
            store_err(&[("store-endpoints", "http://a:1,https://b:2")])
                .starts_with("--store-endpoints")
        );
        assert!(store_err(&[("store-endpoints", "ftp://a:1")]).starts_with("--store-endpoints"));
        let e = load(Role::Sentinel, &[("store-backend", "etcdv3")], &[], None)
            .unwrap()
            .store_config()
            .unwrap_err();
        assert!(
            e.to_string().starts_with("--cluster-name is required"),
            "{e}"
        );
        let e = load(Role::Sentinel, &[("cluster-name", "c")], &[], None)
            .unwrap()
            .store_config()
            .unwrap_err();
        assert!(
            e.to_string().starts_with("--store-backend is required"),
            "{e}"
        );
    }

    #[test]
    fn log_level_and_deprecated_debug() {
        let e = load(Role::Proxy, &[("log-level", "loud")], &[], None)
            .unwrap()
            .log_settings()
            .unwrap_err();
        assert!(
            e.to_string().starts_with("--log-level: unknown log level"),
            "{e}"
        );
        let l = load(Role::Proxy, &[("debug", "true")], &[], None)
            .unwrap()
            .log_settings()
            .unwrap();
        assert_eq!(l.level, tracing::Level::DEBUG);
        assert!(l.deprecated_debug);
        let l = load(Role::Proxy, &[("log-color", "false")], &[], None)
            .unwrap()
            .log_settings()
            .unwrap();
        assert_eq!(l.color, Some(false));
    }

    fn keeper(given: &[(&'static str, &str)]) -> Result<KeeperConfig, ConfigError> {
        let mut all = vec![
            ("data-dir", "/tmp/k"),
            ("pg-listen-address", "127.0.0.1"),
            ("pg-repl-username", "repl"),
            ("pg-repl-password", "rp"),
            ("pg-su-username", "su"),
            ("pg-su-password", "sp"),
        ];
        all.retain(|(k, _)| !given.iter().any(|(g, _)| g == k));
        all.extend_from_slice(given);
        load(Role::Keeper, &all, &[], None).unwrap().keeper_config()
    }

    #[test]
    fn keeper_flags_resolve() {
        let k = keeper(&[
            ("id", "k_1"),
            ("pg-port", "5433"),
            ("can-be-master", "false"),
        ])
        .unwrap();
        assert_eq!(k.uid.as_deref(), Some("k_1"), "--id is an alias of --uid");
        assert_eq!(k.pg_port, 5433);
        assert!(!k.can_be_master);
        assert!(k.can_be_synchronous_replica);
        assert_eq!(k.pg_su_auth_method, AuthMethod::Md5);
        let k = keeper(&[
            ("pg-su-auth-method", "trust"),
            ("pg-su-password", ""),
            ("pg-repl-auth-method", "scram-sha-256"),
        ])
        .unwrap();
        assert_eq!(k.pg_su_password, None);
        assert_eq!(k.pg_repl_auth_method, AuthMethod::ScramSha256);
    }

    #[test]
    fn keeper_bad_values_name_the_flag() {
        let cases: &[(&[(&'static str, &str)], &str)] = &[
            (&[("uid", "Bad-Uid")], "--uid: invalid keeper uid"),
            (
                &[("pg-su-auth-method", "password")],
                "--pg-su-auth-method: unknown auth method",
            ),
            (&[("pg-port", "70000")], "--pg-port: invalid port"),
            (&[("data-dir", "")], "--data-dir is required"),
            (
                &[("pg-repl-password", "")],
                "--pg-repl-password: a replication password is required",
            ),
            (
                &[("pg-su-auth-method", "trust")],
                "--pg-su-auth-method: superuser auth method is trust but a password was given",
            ),
            (
                &[("pg-su-username", "repl"), ("pg-su-password", "other")],
                "--pg-su-password: provided superuser name and replication user name are the same",
            ),
            (
                &[("can-be-master", "maybe")],
                "--can-be-master: invalid boolean",
            ),
        ];
        for (given, want) in cases {
            let e = keeper(given).unwrap_err().to_string();
            assert!(e.starts_with(want), "{given:?}: {e}");
        }
    }

    #[test]
    fn password_file_newline_stripped_and_empty_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "secret\r\n").unwrap();
        let k = keeper(&[
            ("pg-su-password", ""),
            ("pg-su-passwordfile", p.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(k.pg_su_password.as_deref(), Some("secret"));
        std::fs::write(&p, "\n").unwrap();
        let e = keeper(&[
            ("pg-su-password", ""),
            ("pg-su-passwordfile", p.to_str().unwrap()),
        ])
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("is empty after removing trailing new line"),
            "{e}"
        );
        let e = keeper(&[("pg-su-passwordfile", p.to_str().unwrap())]).unwrap_err();
        assert!(e.to_string().contains("only one of"), "{e}");
    }

    #[test]
    fn proxy_keepalive_negative_refused() {
        let e = load(Role::Proxy, &[("tcp-keepalive-idle", "-1")], &[], None)
            .unwrap()
            .proxy_config()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--tcp-keepalive-idle: must be positive (got -1)"
        );
        let p = load(
            Role::Proxy,
            &[],
            &[
                ("STPROXY_TCP_KEEPALIVE_COUNT", "4"),
                ("STPROXY_STOP_LISTENING", "false"),
            ],
            None,
        )
        .unwrap()
        .proxy_config()
        .unwrap();
        assert_eq!(p.tcp_keepalive_count, 4);
        assert!(!p.stop_listening);
        assert_eq!(p.port, 5432);
    }

    #[test]
    fn sentinel_initial_spec_validated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spec.json");
        std::fs::write(&p, r#"{"initMode":"new","maxStandbys":0}"#).unwrap();
        let e = load(
            Role::Sentinel,
            &[("initial-cluster-spec", p.to_str().unwrap())],
            &[],
            None,
        )
        .unwrap()
        .sentinel_config()
        .unwrap_err();
        assert!(
            e.to_string().starts_with("--initial-cluster-spec")
                && e.to_string().contains("maxStandbys"),
            "{e}"
        );
    }

    fn keeper_with_credentials(
        given: &[(&'static str, &str)],
        dir: &Path,
    ) -> Result<KeeperConfig, ConfigError> {
        let mut all = vec![
            ("data-dir", "/tmp/k"),
            ("pg-listen-address", "127.0.0.1"),
            ("pg-repl-username", "repl"),
            ("pg-su-username", "su"),
        ];
        all.extend_from_slice(given);
        let creds = dir.to_str().unwrap();
        load(
            Role::Keeper,
            &all,
            &[("CREDENTIALS_DIRECTORY", creds)],
            None,
        )
        .unwrap()
        .keeper_config()
    }

    #[test]
    fn passwords_from_systemd_credentials() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg-su-password"), "su-secret\n").unwrap();
        std::fs::write(dir.path().join("pg-repl-password"), "repl-secret").unwrap();
        let k = keeper_with_credentials(&[], dir.path()).unwrap();
        assert_eq!(k.pg_su_password.as_deref(), Some("su-secret"));
        assert_eq!(k.pg_repl_password.as_deref(), Some("repl-secret"));

        // A flag or a password file wins over the credential.
        let file = dir.path().join("other");
        std::fs::write(&file, "from-file").unwrap();
        let k = keeper_with_credentials(
            &[
                ("pg-su-password", "from-flag"),
                ("pg-repl-passwordfile", file.to_str().unwrap()),
            ],
            dir.path(),
        )
        .unwrap();
        assert_eq!(k.pg_su_password.as_deref(), Some("from-flag"));
        assert_eq!(k.pg_repl_password.as_deref(), Some("from-file"));

        // trust ignores it.
        let k = keeper_with_credentials(&[("pg-su-auth-method", "trust")], dir.path()).unwrap();
        assert_eq!(k.pg_su_password, None);
    }

    #[test]
    fn bad_or_missing_credential_named_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg-su-password"), "\n").unwrap();
        std::fs::write(dir.path().join("pg-repl-password"), "repl-secret").unwrap();
        let e = keeper_with_credentials(&[], dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--pg-su-password: systemd credential: superuser password file"),
            "{e}"
        );
        assert!(e.contains("is empty"), "{e}");

        std::fs::remove_file(dir.path().join("pg-su-password")).unwrap();
        let e = keeper_with_credentials(&[], dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("systemd credential named pg-su-password"), "{e}");
        assert!(!e.contains("repl-secret"), "{e}");
        assert!(
            !format!(
                "{:?}",
                load(Role::Keeper, &[("pg-su-password", "hunter2")], &[], None).unwrap()
            )
            .contains("hunter2")
        );
    }
}
