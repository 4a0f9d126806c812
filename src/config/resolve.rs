//! Per-role settings: the typed configs the store, keeper, sentinel and proxy start from.

use super::error::{ConfigError, invalid};
use super::loaded::Loaded;
use super::parse::{parse_duration, parse_endpoints};
use crate::cluster::ClusterSpec;
use crate::keeper::KeeperConfig;
use crate::postgres::AuthMethod;
use crate::proxy::ProxyConfig;
use crate::sentinel::SentinelConfig;
use crate::store::{DEFAULT_ENDPOINT, StoreBackend, StoreConfig, StoreError};
use std::path::PathBuf;

impl Loaded {
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
