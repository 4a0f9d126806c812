//! The flag tables: every flag of every role with its default and help, the single source
//! clap, the environment and the file are driven by.

use crate::store::DEFAULT_ENDPOINT;

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
pub(super) const CONFIG_FLAG: &str = "config";

pub(super) const COMMON_FLAGS: &[FlagDef] = &[
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

pub(super) const DAEMON_FLAGS: &[FlagDef] = &[
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

pub(super) const CTL_FLAGS: &[FlagDef] = &[
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

pub(super) const KEEPER_FLAGS: &[FlagDef] = &[
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

pub(super) const SENTINEL_FLAGS: &[FlagDef] = &[text(
    "initial-cluster-spec",
    None,
    "JSON cluster spec file used to initialise the cluster when no cluster data exists",
)];

pub(super) const PROXY_FLAGS: &[FlagDef] = &[
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
pub(super) fn key_of(flag: &str) -> String {
    flag.replace('-', "_")
}
