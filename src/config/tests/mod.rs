//! Each test builds the layers from explicit flags, environment and file, never the process's.

use super::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

mod layers;
mod roles;

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
