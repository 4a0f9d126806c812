use super::error::ConfigError;
use super::flags::{CONFIG, key_of};
use super::role::Role;
use std::path::Path;

/// The TOML file as a layer: keys are flag names in either spelling (`store-endpoints` or
/// `store_endpoints`); unknown keys are refused so a typo does not silently do nothing.
#[derive(Debug, Clone)]
pub(super) struct FileLayer {
    origin: String,
    values: config::Map<String, String>,
}

impl FileLayer {
    pub(super) fn read(role: Role, path: &Path) -> Result<FileLayer, ConfigError> {
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
            if flag == CONFIG.name || !role.flags().any(|d| d.name == flag) {
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
