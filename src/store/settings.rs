//! The store settings every role shares, read from the merged configuration layers
//! (src/config/).

use super::{StoreBackend, StoreConfig, StoreCredentials, StoreError};
use crate::config::{ConfigError, Loaded, flags, invalid, parse_endpoints, read_password_file};

impl StoreConfig {
    pub fn from_loaded(l: &Loaded) -> Result<StoreConfig, ConfigError> {
        let cluster_name = l.require(&flags::CLUSTER_NAME)?;
        let backend = l.parse(&flags::STORE_BACKEND, |b| {
            StoreBackend::parse(b).map_err(|e| match e {
                StoreError::Config(msg) => msg,
                other => other.to_string(),
            })
        })?;
        let endpoints = l.parse(&flags::STORE_ENDPOINTS, parse_endpoints)?;
        let timeout = l.duration(&flags::STORE_TIMEOUT)?;
        if timeout.is_zero() {
            return Err(invalid(flags::STORE_TIMEOUT.name, "must be greater than 0"));
        }
        Ok(StoreConfig {
            backend,
            endpoints,
            timeout,
            prefix: l.require(&flags::STORE_PREFIX)?,
            cluster_name,
            cert_file: l.path_or_credential(&flags::STORE_CERT_FILE),
            key_file: l.path_or_credential(&flags::STORE_KEY),
            ca_file: l.path_or_credential(&flags::STORE_CA_FILE),
            skip_tls_verify: l.bool(&flags::STORE_SKIP_TLS_VERIFY)?,
            credentials: credentials(l)?,
        })
    }
}

/// Both or neither of `--store-user` and its password (file or systemd credential).
fn credentials(l: &Loaded) -> Result<Option<StoreCredentials>, ConfigError> {
    let user = l.get(&flags::STORE_USER);
    let password_file = l.path_or_credential(&flags::STORE_PASSWORD_FILE);
    match (user, password_file) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(
            flags::STORE_PASSWORD_FILE.name,
            "--store-user needs a password: set --store-password-file or pass a systemd credential named store-password-file",
        )),
        (None, Some(_)) => Err(invalid(
            flags::STORE_USER.name,
            "a store password was given without --store-user",
        )),
        (Some(user), Some(path)) => {
            let password = read_password_file(&path, "store")
                .map_err(|r| invalid(flags::STORE_PASSWORD_FILE.name, r))?;
            Ok(Some(StoreCredentials { user, password }))
        }
    }
}
