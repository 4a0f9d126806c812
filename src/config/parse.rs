//! Parsers for values that arrive as strings from any layer.

use crate::cluster::GoDuration;
use crate::store::StoreConfig;

/// Go's strconv.ParseBool, which upstream's flags use.
pub(super) fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(format!("invalid boolean {other:?} (use true or false)")),
    }
}

pub(super) fn parse_duration(v: &str) -> Result<std::time::Duration, String> {
    let d = GoDuration::parse(v.trim()).map_err(|e| format!("invalid duration {v:?}: {e}"))?;
    if d.is_negative() {
        return Err(format!("must be positive (got {d})"));
    }
    Ok(d.to_std())
}

pub(super) fn parse_port(v: &str) -> Result<u16, String> {
    match v.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("invalid port {v:?} (use a number from 1 to 65535)")),
    }
}

/// Upstream: comma list; http or https, or no scheme (= http); all with the same scheme.
/// Checked here with the store's own check, so the error comes before anything is logged.
pub(crate) fn parse_endpoints(list: &str) -> Result<Vec<String>, String> {
    crate::store::normalize_endpoints(&StoreConfig::endpoints_from_flag(list)).map(|(e, _)| e)
}
