//! Typed identifiers for what crosses module boundaries (keepers, dbs, generations), so a keeper
//! uid cannot be passed where a db uid is expected. They serialize as the bare string or number,
//! keeping the clusterdata, the infos and the local state files byte for byte as upstream's.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        // No `Borrow<str>`: maps keyed by this id are then looked up only with this id, never
        // with a bare string that could be another kind of uid.
        #[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Upstream writes an absent uid as the empty string.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }

            pub fn clear(&mut self) {
                self.0.clear()
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_string())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        // Quoted like the String it replaced, so `{uid:?}` in messages reads as before.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                **self == other.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A keeper's uid (`--uid`, or generated and kept in its `keeperstate`).
    KeeperUid
);

string_id!(
    /// A db's uid, chosen by the sentinel; also the `stolon_<uid>` slot and application_name.
    DbUid
);

/// A generation counter (cluster, keeper, db, proxy): bumped by the sentinel on every change
/// it wants acted on, reported back once reached. 0 means never set.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Generation(i64);

impl Generation {
    pub const ZERO: Generation = Generation(0);

    pub const fn new(g: i64) -> Generation {
        Generation(g)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// The generation after this one.
    pub fn next(self) -> Generation {
        Generation(self.0.saturating_add(1))
    }

    pub fn bump(&mut self) {
        *self = self.next();
    }
}

impl From<i64> for Generation {
    fn from(g: i64) -> Self {
        Generation(g)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

// Bare number like the i64 it replaced, for `{:?}` in messages and test output.
impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_serialize_as_the_bare_value() {
        assert_eq!(
            serde_json::to_string(&KeeperUid::from("k1"))
                .ok()
                .as_deref(),
            Some(r#""k1""#)
        );
        assert_eq!(
            serde_json::from_str::<DbUid>(r#""ab12cd34""#).ok(),
            Some(DbUid::from("ab12cd34"))
        );
        assert_eq!(
            serde_json::to_string(&Generation::new(7)).ok().as_deref(),
            Some("7")
        );
        assert_eq!(
            serde_json::from_str::<Generation>("3").ok(),
            Some(Generation::new(3))
        );
    }

    #[test]
    fn debug_and_display_read_like_the_replaced_types() {
        let db = DbUid::from("ab12");
        assert_eq!(format!("{db} {db:?}"), r#"ab12 "ab12""#);
        let g = Generation::new(2);
        assert_eq!(format!("{g} {g:?}"), "2 2");
    }

    #[test]
    fn next_generation() {
        assert_eq!(Generation::new(1).next(), Generation::new(2));
        assert_eq!(Generation::new(i64::MAX).next(), Generation::new(i64::MAX));
    }
}
