//! Go-style duration strings ("5s", "1m30s", "48h0m0s"), the form upstream stolon stores in the
//! cluster spec. Kept signed so a negative value reaches validation and gets a message naming the
//! field instead of an opaque parse error.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration {
    nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason} (use Go syntax such as \"5s\", \"1m30s\", \"250ms\")"
)]
pub struct DurationParseError {
    pub input: String,
    pub reason: &'static str,
}

const NS: i64 = 1;
const US: i64 = 1_000;
const MS: i64 = 1_000_000;
const S: i64 = 1_000_000_000;
const M: i64 = 60 * S;
const H: i64 = 60 * M;

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration { nanos: 0 };

    pub const fn from_nanos(nanos: i64) -> Self {
        GoDuration { nanos }
    }
    pub const fn from_secs(secs: i64) -> Self {
        GoDuration { nanos: secs * S }
    }
    pub const fn from_millis(ms: i64) -> Self {
        GoDuration { nanos: ms * MS }
    }
    pub fn as_nanos(self) -> i64 {
        self.nanos
    }
    pub fn is_negative(self) -> bool {
        self.nanos < 0
    }
    pub fn is_zero(self) -> bool {
        self.nanos == 0
    }
    /// The std duration; negative values (rejected by validation) clamp to zero.
    pub fn to_std(self) -> Duration {
        Duration::from_nanos(self.nanos.max(0) as u64)
    }
    pub fn from_std(d: Duration) -> Self {
        GoDuration {
            nanos: i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        }
    }

    /// Parses Go's `time.ParseDuration` syntax: an optional sign, then one or more
    /// decimal numbers each with a unit (ns, us, µs, ms, s, m, h); "0" alone is allowed.
    pub fn parse(input: &str) -> Result<Self, DurationParseError> {
        let err = |reason| DurationParseError {
            input: input.to_string(),
            reason,
        };
        let mut s = input.trim();
        let mut negative = false;
        if let Some(rest) = s.strip_prefix('-') {
            negative = true;
            s = rest;
        } else if let Some(rest) = s.strip_prefix('+') {
            s = rest;
        }
        if s == "0" {
            return Ok(GoDuration::ZERO);
        }
        if s.is_empty() {
            return Err(err("empty"));
        }
        let mut total: f64 = 0.0;
        while !s.is_empty() {
            let num_len = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(s.len());
            if num_len == 0 {
                return Err(err("expected a number"));
            }
            let value: f64 = s[..num_len].parse().map_err(|_| err("bad number"))?;
            s = &s[num_len..];
            let unit_len = s
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(s.len());
            let unit = match &s[..unit_len] {
                "ns" => NS,
                "us" | "µs" | "μs" => US,
                "ms" => MS,
                "s" => S,
                "m" => M,
                "h" => H,
                "" => return Err(err("missing unit")),
                _ => return Err(err("unknown unit")),
            };
            s = &s[unit_len..];
            total += value * unit as f64;
        }
        if total > i64::MAX as f64 {
            return Err(err("overflow"));
        }
        let nanos = total.round() as i64;
        Ok(GoDuration {
            nanos: if negative { -nanos } else { nanos },
        })
    }
}

impl fmt::Display for GoDuration {
    /// Formats like Go's `Duration.String()`, so stored specs look the same as upstream's.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let n = self.nanos.unsigned_abs();
        if n == 0 {
            return f.write_str("0s");
        }
        if n < S as u64 {
            let (unit, div) = if n < US as u64 {
                ("ns", 1u64)
            } else if n < MS as u64 {
                ("µs", US as u64)
            } else {
                ("ms", MS as u64)
            };
            return write!(f, "{sign}{}{unit}", frac(n, div));
        }
        let h = n / H as u64;
        let rem = n % H as u64;
        let m = rem / M as u64;
        let rem = rem % M as u64;
        let secs = frac(rem, S as u64);
        if h > 0 {
            write!(f, "{sign}{h}h{m}m{secs}s")
        } else if m > 0 {
            write!(f, "{sign}{m}m{secs}s")
        } else {
            write!(f, "{sign}{secs}s")
        }
    }
}

/// `n / div` as a decimal without trailing zeros.
fn frac(n: u64, div: u64) -> String {
    let whole = n / div;
    let rest = n % div;
    if rest == 0 {
        return whole.to_string();
    }
    let width = (div as f64).log10().round() as usize;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GoDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for GoDuration {
    type Err = DurationParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GoDuration::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_syntax() {
        assert_eq!(GoDuration::parse("5s").unwrap(), GoDuration::from_secs(5));
        assert_eq!(
            GoDuration::parse("1m30s").unwrap(),
            GoDuration::from_secs(90)
        );
        assert_eq!(
            GoDuration::parse("250ms").unwrap(),
            GoDuration::from_millis(250)
        );
        assert_eq!(
            GoDuration::parse("1.5h").unwrap(),
            GoDuration::from_secs(5400)
        );
        assert_eq!(GoDuration::parse("0").unwrap(), GoDuration::ZERO);
        assert_eq!(GoDuration::parse("-5s").unwrap(), GoDuration::from_secs(-5));
        assert!(GoDuration::parse("5").is_err());
        assert!(GoDuration::parse("5x").is_err());
        assert!(GoDuration::parse("").is_err());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(GoDuration::from_secs(5).to_string(), "5s");
        assert_eq!(GoDuration::from_secs(90).to_string(), "1m30s");
        assert_eq!(GoDuration::from_secs(48 * 3600).to_string(), "48h0m0s");
        assert_eq!(GoDuration::from_millis(1500).to_string(), "1.5s");
        assert_eq!(GoDuration::from_millis(250).to_string(), "250ms");
        assert_eq!(GoDuration::ZERO.to_string(), "0s");
        assert_eq!(GoDuration::from_secs(-5).to_string(), "-5s");
    }

    #[test]
    fn round_trips() {
        for s in ["5s", "1m30s", "48h0m0s", "1.5s", "250ms", "0s", "20µs"] {
            assert_eq!(GoDuration::parse(s).unwrap().to_string(), s);
        }
    }
}
