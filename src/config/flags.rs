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

// Every flag of every role, named: code reads a setting through its constant, so a
// misspelt flag is a compile error and its default is the one written here.

pub(crate) const CONFIG: FlagDef = text(
    "config",
    None,
    // Keep in step with shutdown::RELOADS.
    "TOML file with flag names as keys (default /etc/stolon/<role>.toml if it exists); SIGHUP re-reads it and applies log-level, other settings apply at restart",
);

pub(crate) const CLUSTER_NAME: FlagDef = text("cluster-name", None, "cluster name (required)");

pub(crate) const STORE_BACKEND: FlagDef =
    text("store-backend", None, "store backend type (etcdv3)");

pub(crate) const STORE_ENDPOINTS: FlagDef = text(
    "store-endpoints",
    Some(DEFAULT_ENDPOINT),
    "comma separated list of store endpoints",
);

pub(crate) const STORE_TIMEOUT: FlagDef =
    text("store-timeout", Some("5s"), "store request timeout");

pub(crate) const STORE_PREFIX: FlagDef = text(
    "store-prefix",
    Some("stolon/cluster"),
    "the store base prefix",
);

pub(crate) const STORE_CERT_FILE: FlagDef = text(
    "store-cert-file",
    None,
    "certificate file for client identification to the store",
);

pub(crate) const STORE_KEY: FlagDef = text(
    "store-key",
    None,
    "private key file for client identification to the store",
);

pub(crate) const STORE_CA_FILE: FlagDef = text(
    "store-ca-file",
    None,
    "verify certificates of HTTPS-enabled store servers using this CA bundle",
);

pub(crate) const STORE_USER: FlagDef = text(
    "store-user",
    None,
    "etcd user name, for an etcd with authentication enabled (needs --store-password-file)",
);

pub(crate) const STORE_PASSWORD_FILE: FlagDef = text(
    "store-password-file",
    None,
    "file holding the password of --store-user (or a systemd credential named store-password-file)",
);

pub(crate) const STORE_SKIP_TLS_VERIFY: FlagDef = boolean(
    "store-skip-tls-verify",
    Some("false"),
    "skip store certificate verification (insecure!)",
);

pub(crate) const METRICS_LISTEN_ADDRESS: FlagDef = text(
    "metrics-listen-address",
    None,
    "serve Prometheus metrics at http://<address>/metrics (host:port, or :port for every address; stolonctl: ignored)",
);

pub(crate) const API_LISTEN_ADDRESS: FlagDef = text(
    "api-listen-address",
    None,
    "serve the health checks for load balancers (GET /health, /primary, /replica, /read-only) at http://<address>/ (host:port, or :port for every address); --metrics-listen-address serves them too",
);

pub(crate) const KUBE_RESOURCE_KIND: FlagDef = text(
    "kube-resource-kind",
    None,
    "kubernetes resource kind (the kubernetes backend is not supported)",
);

pub(crate) const LOG_LEVEL: FlagDef = text("log-level", Some("info"), "debug, info, warn or error");

pub(crate) const LOG_COLOR: FlagDef = boolean(
    "log-color",
    None,
    "colour the log output (default: when stderr is a terminal)",
);

pub(crate) const DEBUG: FlagDef = hidden(boolean(
    "debug",
    Some("false"),
    "deprecated: use --log-level=debug",
));

pub(crate) const KUBECONFIG: FlagDef = text(
    "kubeconfig",
    None,
    "path to kubeconfig file (kubernetes backend: not supported)",
);

pub(crate) const KUBE_CONTEXT: FlagDef = text(
    "kube-context",
    None,
    "kubernetes context (kubernetes backend: not supported)",
);

pub(crate) const KUBE_NAMESPACE: FlagDef = text(
    "kube-namespace",
    None,
    "kubernetes namespace (kubernetes backend: not supported)",
);

pub(crate) const UID: FlagDef = text(
    "uid",
    None,
    "keeper uid (must be unique in the cluster; a-z, 0-9 and _ only)",
);

pub(crate) const ID: FlagDef = hidden(text("id", None, "deprecated alias of --uid"));

pub(crate) const DATA_DIR: FlagDef = text("data-dir", None, "data directory (required)");

pub(crate) const PG_LISTEN_ADDRESS: FlagDef = text(
    "pg-listen-address",
    None,
    "postgresql instance listening address (required)",
);

pub(crate) const PG_ADVERTISE_ADDRESS: FlagDef = text(
    "pg-advertise-address",
    None,
    "postgresql instance address from outside (default: --pg-listen-address)",
);

pub(crate) const PG_PORT: FlagDef = text(
    "pg-port",
    Some("5432"),
    "postgresql instance listening port",
);

pub(crate) const PG_ADVERTISE_PORT: FlagDef = text(
    "pg-advertise-port",
    None,
    "postgresql instance port from outside (default: --pg-port)",
);

pub(crate) const PG_SOCKET_DIR: FlagDef = text(
    "pg-socket-dir",
    None,
    "directory of PostgreSQL's unix socket and its lock file (default: <data-dir>/socket, private to the keeper; upstream's /tmp lets any local user block PostgreSQL's start)",
);

pub(crate) const PG_BIN_PATH: FlagDef = text(
    "pg-bin-path",
    None,
    "absolute path to postgresql binaries (default: $PATH)",
);

pub(crate) const PG_REPL_AUTH_METHOD: FlagDef = text(
    "pg-repl-auth-method",
    Some("md5"),
    "replication user auth method: md5, scram-sha-256 or trust",
);

pub(crate) const PG_REPL_USERNAME: FlagDef = text(
    "pg-repl-username",
    None,
    "postgres replication user name (required)",
);

pub(crate) const PG_REPL_PASSWORD: FlagDef = text(
    "pg-repl-password",
    None,
    "postgres replication user password",
);

pub(crate) const PG_REPL_PASSWORDFILE: FlagDef = text(
    "pg-repl-passwordfile",
    None,
    "postgres replication user password file",
);

pub(crate) const PG_TRUST_NETWORKS: FlagDef = text(
    "pg-trust-networks",
    None,
    "comma separated networks (CIDR) from which a user with auth method trust is let in without a password (default: this host only)",
);

pub(crate) const PG_SU_AUTH_METHOD: FlagDef = text(
    "pg-su-auth-method",
    Some("md5"),
    "superuser auth method: md5, scram-sha-256 or trust",
);

pub(crate) const PG_SU_USERNAME: FlagDef = text(
    "pg-su-username",
    None,
    "postgres superuser name (default: the effective OS user)",
);

pub(crate) const PG_SU_PASSWORD: FlagDef =
    text("pg-su-password", None, "postgres superuser password");

pub(crate) const PG_SU_PASSWORDFILE: FlagDef = text(
    "pg-su-passwordfile",
    None,
    "postgres superuser password file",
);

pub(crate) const CAN_BE_MASTER: FlagDef = boolean(
    "can-be-master",
    Some("true"),
    "whether this keeper may be elected master",
);

pub(crate) const PRIORITY: FlagDef = text(
    "priority",
    Some("1"),
    "election priority: among eligible standbys the sentinel elects the highest priority, then the most advanced one; 0 = never elected automatically (still a switchover target)",
);

pub(crate) const CAN_BE_SYNCHRONOUS_REPLICA: FlagDef = boolean(
    "can-be-synchronous-replica",
    Some("true"),
    "whether this keeper may be chosen as synchronous replica",
);

pub(crate) const DISABLE_DATA_DIR_LOCKING: FlagDef = boolean(
    "disable-data-dir-locking",
    Some("false"),
    "do not lock the data dir",
);

pub(crate) const INITIAL_CLUSTER_SPEC: FlagDef = text(
    "initial-cluster-spec",
    None,
    "JSON cluster spec file used to initialise the cluster when no cluster data exists",
);

pub(crate) const LISTEN_ADDRESS: FlagDef = text(
    "listen-address",
    Some("127.0.0.1"),
    "proxy listening address (unused when systemd passes sockets: socket activation)",
);

pub(crate) const PORT: FlagDef = text(
    "port",
    Some("5432"),
    "proxy listening port (unused when systemd passes sockets: socket activation)",
);

pub(crate) const STOP_LISTENING: FlagDef = boolean(
    "stop-listening",
    Some("true"),
    "stop listening when the store cannot be read for proxyTimeout; a socket passed by systemd (socket activation) is never closed: while there is no master the proxy accepts and at once closes every client on it",
);

pub(crate) const TCP_KEEPALIVE_IDLE: FlagDef = text(
    "tcp-keepalive-idle",
    Some("0"),
    "seconds before the first keepalive probe (0 = OS default)",
);

pub(crate) const TCP_KEEPALIVE_COUNT: FlagDef = text(
    "tcp-keepalive-count",
    Some("0"),
    "keepalive probes before dropping (0 = OS default)",
);

pub(crate) const TCP_KEEPALIVE_INTERVAL: FlagDef = text(
    "tcp-keepalive-interval",
    Some("0"),
    "seconds between keepalive probes (0 = OS default)",
);

pub(crate) const MAX_CONNECTIONS: FlagDef = text(
    "max-connections",
    Some("0"),
    "client connections served at once; past it new clients are closed at once (0 = the open-file limit less 64, which the proxy raises to its hard limit at start)",
);

pub(crate) const CLIENT_STARTUP_TIMEOUT: FlagDef = text(
    "client-startup-timeout",
    Some("60s"),
    "close a client that sends nothing for this long after connecting; the master is dialed only once a client has spoken (0 = never close)",
);

pub(crate) const HOLD_TIMEOUT: FlagDef = text(
    "hold-timeout",
    Some("5s"),
    "while the store is read but no master is routed (a failover or switchover, this proxy not yet enabled), a new client waits this long for one instead of being closed at once; held clients count against --max-connections (0 = close at once, as upstream)",
);

pub(crate) const READ_ONLY_LISTEN_ADDRESS: FlagDef = text(
    "read-only-listen-address",
    None,
    "read-only listening address: its clients go to healthy standbys (default: --listen-address; used only with --read-only-port, or with no socket named read-only passed by systemd)",
);

pub(crate) const READ_ONLY_PORT: FlagDef = text(
    "read-only-port",
    None,
    "read-only listening port: its clients are spread over the healthy standbys within maxStandbyLag of the master, and cut when theirs stops qualifying (default: no read-only listener, unless systemd passes a socket named read-only)",
);

pub(crate) const READ_ONLY_FALLBACK_MASTER: FlagDef = boolean(
    "read-only-fallback-master",
    Some("false"),
    "send read-only clients to the master while no standby qualifies, instead of closing them at once",
);

pub(crate) const KERNEL_FORWARDING: FlagDef = boolean(
    "kernel-forwarding",
    Some("false"),
    "let the kernel move each session's bytes between client and master (eBPF sockmap; needs CAP_BPF and CAP_NET_ADMIN, and a build with the kernel-forwarding feature); the proxy still decides routing and cuts sessions",
);

pub(super) const COMMON_FLAGS: &[&FlagDef] = &[
    &CONFIG,
    &CLUSTER_NAME,
    &STORE_BACKEND,
    &STORE_ENDPOINTS,
    &STORE_TIMEOUT,
    &STORE_PREFIX,
    &STORE_CERT_FILE,
    &STORE_KEY,
    &STORE_CA_FILE,
    &STORE_USER,
    &STORE_PASSWORD_FILE,
    &STORE_SKIP_TLS_VERIFY,
    &METRICS_LISTEN_ADDRESS,
    &KUBE_RESOURCE_KIND,
    &LOG_LEVEL,
];

pub(super) const DAEMON_FLAGS: &[&FlagDef] = &[&LOG_COLOR, &DEBUG];

pub(super) const CTL_FLAGS: &[&FlagDef] = &[&KUBECONFIG, &KUBE_CONTEXT, &KUBE_NAMESPACE];

pub(super) const KEEPER_FLAGS: &[&FlagDef] = &[
    &UID,
    &ID,
    &DATA_DIR,
    &PG_LISTEN_ADDRESS,
    &PG_ADVERTISE_ADDRESS,
    &PG_PORT,
    &PG_ADVERTISE_PORT,
    &PG_SOCKET_DIR,
    &PG_BIN_PATH,
    &PG_REPL_AUTH_METHOD,
    &PG_REPL_USERNAME,
    &PG_REPL_PASSWORD,
    &PG_REPL_PASSWORDFILE,
    &PG_TRUST_NETWORKS,
    &PG_SU_AUTH_METHOD,
    &PG_SU_USERNAME,
    &PG_SU_PASSWORD,
    &PG_SU_PASSWORDFILE,
    &CAN_BE_MASTER,
    &PRIORITY,
    &CAN_BE_SYNCHRONOUS_REPLICA,
    &DISABLE_DATA_DIR_LOCKING,
    &API_LISTEN_ADDRESS,
];

pub(super) const SENTINEL_FLAGS: &[&FlagDef] = &[&INITIAL_CLUSTER_SPEC];

pub(super) const PROXY_FLAGS: &[&FlagDef] = &[
    &LISTEN_ADDRESS,
    &PORT,
    &STOP_LISTENING,
    &TCP_KEEPALIVE_IDLE,
    &TCP_KEEPALIVE_COUNT,
    &TCP_KEEPALIVE_INTERVAL,
    &MAX_CONNECTIONS,
    &CLIENT_STARTUP_TIMEOUT,
    &HOLD_TIMEOUT,
    &READ_ONLY_LISTEN_ADDRESS,
    &READ_ONLY_PORT,
    &READ_ONLY_FALLBACK_MASTER,
    &KERNEL_FORWARDING,
];

/// The key a flag has in the layers: the environment can only produce `_`.
pub(super) fn key_of(flag: &str) -> String {
    flag.replace('-', "_")
}
