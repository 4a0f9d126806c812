//! The store settings every role shares, read from the merged configuration layers
//! (src/config/).

use super::{StoreBackend, StoreConfig, StoreError};
use crate::config::{ConfigError, Loaded, flags, invalid, parse_endpoints};

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
        })
    }
}
