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
/// Checked here too (the store checks again at connect) so the error comes before anything
/// is logged and names the flag.
pub(super) fn parse_endpoints(list: &str) -> Result<Vec<String>, String> {
    let endpoints = StoreConfig::endpoints_from_flag(list);
    let mut scheme: Option<&str> = None;
    for e in &endpoints {
        let this = match e.split_once("://") {
            Some((s @ ("http" | "https"), rest)) if !rest.is_empty() => s,
            _ => {
                return Err(format!(
                    "endpoint {e:?}: unsupported scheme (use http:// or https://)"
                ));
            }
        };
        match scheme {
            Some(s) if s != this => {
                return Err(format!(
                    "all endpoints must use the same scheme ({e:?} is {this}, others {s})"
                ));
            }
            _ => scheme = Some(this),
        }
    }
    Ok(endpoints)
}
