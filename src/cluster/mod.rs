//! The data model shared by every role: the cluster spec, the clusterdata document and the
//! infos each process publishes. Pure data, no I/O.

mod data;
mod duration;
mod fencing;
mod ids;
mod infos;
mod input;
mod spec;
mod switchover;

pub use data::*;
pub use duration::{DurationParseError, GoDuration};
pub use fencing::FenceTiming;
pub use ids::{DbUid, Generation, KeeperUid};
pub use infos::*;
pub use input::{check_hba_line, closest, parse_spec_input};
pub use spec::*;
pub use switchover::{Switchover, SwitchoverStage};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer};

pub type Time = DateTime<Utc>;

/// Go's zero `time.Time`, which upstream writes for never-set timestamps.
pub fn zero_time() -> Time {
    Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A random 8-hex-character uid, the form upstream uses for dbs, keepers, sentinels and proxies.
pub fn new_uid() -> String {
    let bytes = uuid::Uuid::new_v4();
    bytes.simple().to_string()[..8].to_string()
}

/// Parses JSON naming the path of the offending field in the error, e.g.
/// `initMode: unknown variant "bogus", expected one of "new", "existing", "pitr"`.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    // Syntax first: serde_path_to_error reports a syntax error with a "?" path, twice.
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| format!("invalid JSON: {e}"))?;
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            format!("invalid JSON: {inner}")
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// Go marshals nil slices and maps as `null`; read those as empty.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

pub(crate) fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: From<String>,
{
    Ok(Option::<String>::deserialize(d)?
        .filter(|s| !s.is_empty())
        .map(T::from))
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
pub(crate) fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
pub(crate) fn is_zero_u16(v: &u16) -> bool {
    *v == 0
}

#[cfg(test)]
pub(crate) mod fuzz_tests;
#[cfg(test)]
mod tests;
