//! The keeper's settings, read from the merged configuration layers (src/config/).

use super::KeeperConfig;
use crate::cluster::KeeperUid;
use crate::config::{ConfigError, Loaded, flags, invalid};
use crate::postgres::AuthMethod;

impl KeeperConfig {
    pub fn from_loaded(l: &Loaded) -> Result<KeeperConfig, ConfigError> {
        // `--id` is upstream's deprecated alias; `--uid` wins when both are given.
        let uid_flag = if l.get(&flags::UID).is_some() {
            &flags::UID
        } else {
            &flags::ID
        };
        let uid = l.parse_opt(uid_flag, |uid| {
            if is_valid_keeper_uid(uid) {
                Ok(KeeperUid::from(uid))
            } else {
                Err(format!(
                    "invalid keeper uid {uid:?}: only a-z, 0-9 and _ are allowed"
                ))
            }
        })?;
        // Parsed in upstream's order, so the first error reported is the one upstream reports.
        let data_dir = l.require(&flags::DATA_DIR)?.into();
        let pg_listen_address = l.require(&flags::PG_LISTEN_ADDRESS)?;
        let pg_port = l.port(&flags::PG_PORT)?;
        let pg_repl_auth_method = l.parse(&flags::PG_REPL_AUTH_METHOD, str::parse)?;
        let pg_su_auth_method = l.parse(&flags::PG_SU_AUTH_METHOD, str::parse)?;
        let pg_repl_username = l.require(&flags::PG_REPL_USERNAME)?;
        let pg_su_username = match l.get(&flags::PG_SU_USERNAME) {
            Some(u) => u,
            None => effective_user().map_err(|r| invalid(flags::PG_SU_USERNAME.name, r))?,
        };
        let pg_repl_password = l.password(
            "replication",
            pg_repl_auth_method,
            &flags::PG_REPL_PASSWORD,
            &flags::PG_REPL_PASSWORDFILE,
            &flags::PG_REPL_AUTH_METHOD,
        )?;
        let pg_su_password = l.password(
            "superuser",
            pg_su_auth_method,
            &flags::PG_SU_PASSWORD,
            &flags::PG_SU_PASSWORDFILE,
            &flags::PG_SU_AUTH_METHOD,
        )?;
        if pg_su_username == pg_repl_username {
            tracing::warn!(
                user = %pg_su_username,
                "superuser name and replication user name are the same; prefer distinct users"
            );
            if pg_su_auth_method != pg_repl_auth_method {
                return Err(invalid(
                    flags::PG_SU_AUTH_METHOD.name,
                    "superuser and replication user are the same but their auth methods differ",
                ));
            }
            if pg_su_auth_method != AuthMethod::Trust && pg_su_password != pg_repl_password {
                return Err(invalid(
                    flags::PG_SU_PASSWORD.name,
                    "provided superuser name and replication user name are the same but provided passwords are different",
                ));
            }
        }
        Ok(KeeperConfig {
            uid,
            data_dir,
            pg_advertise_address: l.get(&flags::PG_ADVERTISE_ADDRESS),
            pg_listen_address,
            pg_port,
            pg_advertise_port: l.port_opt(&flags::PG_ADVERTISE_PORT)?,
            pg_bin_path: l.path(&flags::PG_BIN_PATH),
            pg_socket_dir: l.path(&flags::PG_SOCKET_DIR),
            pg_repl_auth_method,
            pg_repl_username,
            pg_repl_password,
            pg_su_auth_method,
            pg_su_username,
            pg_su_password,
            pg_trust_networks: l
                .parse_opt(&flags::PG_TRUST_NETWORKS, parse_networks)?
                .unwrap_or_default(),
            can_be_master: l.bool(&flags::CAN_BE_MASTER)?,
            priority: l.parse(&flags::PRIORITY, |v| {
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("invalid priority {v:?} (a whole number, 0 or more)"))
            })?,
            can_be_synchronous_replica: l.bool(&flags::CAN_BE_SYNCHRONOUS_REPLICA)?,
            disable_data_dir_locking: l.bool(&flags::DISABLE_DATA_DIR_LOCKING)?,
        })
    }
}

/// A comma list of networks as pg_hba.conf takes them: `address/prefix`, IPv4 or IPv6.
fn parse_networks(list: &str) -> Result<Vec<String>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            let valid = n.split_once('/').is_some_and(|(addr, bits)| {
                match (addr.parse::<std::net::IpAddr>(), bits.parse::<u8>()) {
                    (Ok(std::net::IpAddr::V4(_)), Ok(b)) => b <= 32,
                    (Ok(std::net::IpAddr::V6(_)), Ok(b)) => b <= 128,
                    _ => false,
                }
            });
            if valid {
                Ok(n.to_string())
            } else {
                Err(format!(
                    "{n:?} is not a network (use address/prefix, e.g. 10.0.0.0/24 or fd00::/64)"
                ))
            }
        })
        .collect()
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
