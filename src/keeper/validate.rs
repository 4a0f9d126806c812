//! Start-up checks of the keeper settings: refuse root, and the auth-method and
//! password rules for the superuser and the replication user.

use super::error::KeeperError;
use super::{AuthMethod, KeeperConfig};

/// PostgreSQL refuses to run as root, and a keeper running as root would create files
/// PostgreSQL cannot use: fail at once with the fix instead of much later with a worse message.
pub fn refuse_root() -> Result<(), KeeperError> {
    if nix::unistd::geteuid().is_root() {
        return Err(KeeperError::RunningAsRoot);
    }
    Ok(())
}

/// The rules that involve both users, checked on the resolved config.
/// Trust means no password at all: said loudly at every start, with where it applies.
pub fn warn_trust(cfg: &KeeperConfig) {
    for (flag, user, method) in [
        ("pg-su", &cfg.pg_su_username, cfg.pg_su_auth_method),
        ("pg-repl", &cfg.pg_repl_username, cfg.pg_repl_auth_method),
    ] {
        if method != AuthMethod::Trust {
            continue;
        }
        if cfg.pg_trust_networks.is_empty() {
            tracing::warn!(
                %user,
                "--{flag}-auth-method is trust: {user} gets in without a password, from this host \
                 only (127.0.0.1, ::1, the unix socket); keepers on other hosts cannot connect \
                 as {user} unless --pg-trust-networks names their networks"
            );
        } else {
            tracing::warn!(
                %user,
                networks = %cfg.pg_trust_networks.join(","),
                "--{flag}-auth-method is trust: ANYONE who can reach PostgreSQL from these \
                 networks is {user} without a password; prefer scram-sha-256"
            );
        }
    }
}

pub fn validate_auth(cfg: &KeeperConfig) -> Result<(), KeeperError> {
    if cfg.pg_repl_username.is_empty() {
        return Err(KeeperError::Config("--pg-repl-username is required".into()));
    }
    if cfg.pg_su_username.is_empty() {
        return Err(KeeperError::Config("--pg-su-username is empty".into()));
    }
    for (flag, method, password) in [
        ("pg-su", cfg.pg_su_auth_method, &cfg.pg_su_password),
        ("pg-repl", cfg.pg_repl_auth_method, &cfg.pg_repl_password),
    ] {
        match (method, password) {
            (AuthMethod::Trust, Some(_)) => {
                return Err(KeeperError::Config(format!(
                    "--{flag}-auth-method is trust but a password is given: remove the password or use md5/scram-sha-256"
                )));
            }
            (AuthMethod::Md5 | AuthMethod::ScramSha256, None) => {
                return Err(KeeperError::Config(format!(
                    "one of --{flag}-password or --{flag}-passwordfile is required unless --{flag}-auth-method is trust"
                )));
            }
            _ => {}
        }
    }
    if cfg.pg_su_username == cfg.pg_repl_username {
        tracing::warn!("superuser name and replication user name are the same");
        if cfg.pg_su_auth_method != cfg.pg_repl_auth_method {
            return Err(KeeperError::Config(
                "superuser name and replication user name are the same but provided auth methods are different: give both the same --pg-*-auth-method".into(),
            ));
        }
        if cfg.pg_su_auth_method != AuthMethod::Trust && cfg.pg_su_password != cfg.pg_repl_password
        {
            return Err(KeeperError::Config(
                "provided superuser name and replication user name are the same but provided passwords are different".into(),
            ));
        }
    }
    Ok(())
}

/// Upstream warns when the published address is one other hosts cannot use.
pub fn warn_advertise_address(address: &str) {
    match address.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_loopback() => tracing::warn!(
            address,
            "the advertised PostgreSQL address is a loopback address: other keepers and proxies on other hosts cannot reach it; set --pg-advertise-address"
        ),
        Ok(ip) if ip.is_unspecified() => tracing::warn!(
            address,
            "the advertised PostgreSQL address is a wildcard: set --pg-advertise-address to an address other hosts can reach"
        ),
        Ok(_) => {}
        Err(_) if address == "*" => tracing::warn!(
            "--pg-listen-address is '*': set --pg-advertise-address to an address other hosts can reach"
        ),
        Err(_) => tracing::warn!(
            address,
            "the advertised PostgreSQL address is a hostname: keep it resolvable, or set --pg-advertise-address to an IP address"
        ),
    }
}
