//! Parsers for values that arrive as strings from any layer.

use super::error::{ConfigError, invalid};
use crate::cluster::GoDuration;
use crate::store::StoreConfig;

/// Go's strconv.ParseBool, which upstream's flags use.
pub(super) fn parse_bool(flag: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(invalid(
            flag,
            format!("invalid boolean {other:?} (use true or false)"),
        )),
    }
}

pub(super) fn parse_duration(
    flag: &'static str,
    v: &str,
) -> Result<std::time::Duration, ConfigError> {
    let d = GoDuration::parse(v.trim())
        .map_err(|e| invalid(flag, format!("invalid duration {v:?}: {e}")))?;
    if d.is_negative() {
        return Err(invalid(flag, format!("must be positive (got {d})")));
    }
    Ok(d.to_std())
}

/// Upstream: comma list; http or https, or no scheme (= http); all with the same scheme.
/// Checked here with the store's own check, so the error comes before anything is logged.
pub(super) fn parse_endpoints(list: &str) -> Result<Vec<String>, String> {
    crate::store::normalize_endpoints(&StoreConfig::endpoints_from_flag(list)).map(|(e, _)| e)
}
