//! Each test builds the layers from explicit flags, environment and file, never the process's.

use super::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

mod fuzz;
mod layers;
mod roles;

/// Each role builds its own config from the layers; these read as the layers' own methods in
/// the tests below.
trait RoleConfigs {
    fn store_config(&self) -> Result<crate::store::StoreConfig, ConfigError>;
    fn keeper_config(&self) -> Result<crate::keeper::KeeperConfig, ConfigError>;
    fn sentinel_config(&self) -> Result<crate::sentinel::SentinelConfig, ConfigError>;
    fn proxy_config(&self) -> Result<crate::proxy::ProxyConfig, ConfigError>;
}

impl RoleConfigs for Loaded {
    fn store_config(&self) -> Result<crate::store::StoreConfig, ConfigError> {
        crate::store::StoreConfig::from_loaded(self)
    }
    fn keeper_config(&self) -> Result<crate::keeper::KeeperConfig, ConfigError> {
        crate::keeper::KeeperConfig::from_loaded(self)
    }
    fn sentinel_config(&self) -> Result<crate::sentinel::SentinelConfig, ConfigError> {
        crate::sentinel::SentinelConfig::from_loaded(self)
    }
    fn proxy_config(&self) -> Result<crate::proxy::ProxyConfig, ConfigError> {
        crate::proxy::ProxyConfig::from_loaded(self)
    }
}

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
