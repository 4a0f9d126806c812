//! The four roles and the type-level markers that pick a role's flag table for clap.

use super::flags::{
    COMMON_FLAGS, CTL_FLAGS, DAEMON_FLAGS, FlagDef, KEEPER_FLAGS, PROXY_FLAGS, SENTINEL_FLAGS,
    key_of,
};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Keeper,
    Sentinel,
    Proxy,
    Ctl,
}

impl Role {
    pub fn binary(self) -> &'static str {
        match self {
            Role::Keeper => "stolon-keeper",
            Role::Sentinel => "stolon-sentinel",
            Role::Proxy => "stolon-proxy",
            Role::Ctl => "stolonctl",
        }
    }

    /// Upstream's environment prefixes (`STKEEPER_PG_PORT`, `STOLONCTL_CLUSTER_NAME`, ...).
    pub fn env_prefix(self) -> &'static str {
        match self {
            Role::Keeper => "STKEEPER",
            Role::Sentinel => "STSENTINEL",
            Role::Proxy => "STPROXY",
            Role::Ctl => "STOLONCTL",
        }
    }

    /// Read when it exists and no `--config` was given.
    pub fn default_config_path(self) -> PathBuf {
        let name = match self {
            Role::Keeper => "keeper",
            Role::Sentinel => "sentinel",
            Role::Proxy => "proxy",
            Role::Ctl => "stolonctl",
        };
        PathBuf::from(format!("/etc/stolon/{name}.toml"))
    }

    pub fn flags(self) -> impl Iterator<Item = &'static FlagDef> {
        let own: &[&[&FlagDef]] = match self {
            Role::Keeper => &[DAEMON_FLAGS, KEEPER_FLAGS],
            Role::Sentinel => &[DAEMON_FLAGS, SENTINEL_FLAGS],
            Role::Proxy => &[DAEMON_FLAGS, PROXY_FLAGS],
            Role::Ctl => &[CTL_FLAGS],
        };
        COMMON_FLAGS
            .iter()
            .chain(own.iter().flat_map(|t| t.iter()))
            .copied()
    }

    pub(super) fn env_name(self, flag: &str) -> String {
        format!("{}_{}", self.env_prefix(), key_of(flag).to_uppercase())
    }
}

/// Marks which role's flag table a [`Flags`] uses.
pub trait RoleMarker {
    const ROLE: Role;
}

macro_rules! role_marker {
    ($name:ident, $role:expr) => {
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;
        impl RoleMarker for $name {
            const ROLE: Role = $role;
        }
    };
}
role_marker!(KeeperRole, Role::Keeper);
role_marker!(SentinelRole, Role::Sentinel);
role_marker!(ProxyRole, Role::Proxy);
role_marker!(CtlRole, Role::Ctl);
