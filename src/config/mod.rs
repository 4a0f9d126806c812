//! Configuration of the four binaries: defaults < TOML file < `ST<ROLE>_*`
//! environment < command-line flags, layered with the `config` crate.
//!
//! One table per role lists every flag with its default; clap, the environment and the file
//! are all driven by it, so a flag cannot exist in one place and be forgotten in another.
//! Every value travels through the layers as a string and is parsed once, here, so a bad
//! value gets a one-line error naming the flag whichever layer it came from.

mod cli;
mod error;
mod file;
mod flags;
mod loaded;
mod parse;
mod password;
mod resolve;
mod role;
#[cfg(test)]
mod tests;

pub use cli::{Flags, usage_error};
pub use error::{ConfigError, exit_with_error};
pub use flags::{FlagDef, FlagKind};
pub use loaded::{Loaded, LogSettings, Sources};
pub use password::read_password_file;
pub use resolve::is_valid_keeper_uid;
pub use role::{CtlRole, KeeperRole, ProxyRole, Role, RoleMarker, SentinelRole};
