//! Configuration of the four binaries: defaults < TOML file < `ST<ROLE>_*`
//! environment < command-line flags, layered with the `config` crate.
//!
//! Every flag is one named constant in `flags.rs` with its default; the role tables list them,
//! and clap, the environment and the file are all driven by those tables, so a flag cannot
//! exist in one place and be forgotten in another. Code reads a setting through its constant
//! (`loaded.port(&flags::PG_PORT)`), so a misspelt flag does not compile and the default is
//! never written twice. Values travel through the layers as strings; each role builds its own
//! config type from [`Loaded`] with the typed accessors here (`KeeperConfig::from_loaded`,
//! `StoreConfig::from_loaded`, ...), so a bad value gets a one-line error naming the flag
//! whichever layer it came from.

mod cli;
mod error;
mod file;
pub(crate) mod flags;
mod loaded;
mod parse;
mod password;
mod role;
#[cfg(test)]
mod tests;

pub use cli::{Flags, usage_error};
pub(crate) use error::invalid;
pub use error::{ConfigError, exit_with_error};
pub use flags::{FlagDef, FlagKind};
pub use loaded::{Loaded, LogSettings, Sources};
pub(crate) use parse::parse_endpoints;
pub use password::read_password_file;
pub use role::{CtlRole, KeeperRole, ProxyRole, Role, RoleMarker, SentinelRole};
