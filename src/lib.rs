//! stolon: a PostgreSQL high-availability manager (keeper, sentinel, proxy, stolonctl) on etcd v3.
//!
//! Dependencies point one way: `bin → roles (keeper, sentinel, proxy, ctl) → {store, postgres,
//! config} → cluster`. The decision logic (`sentinel::decide`, `keeper::plan`) is pure.

pub mod cluster;
pub mod config;
pub mod ctl;
pub mod daemon;
mod fsutil;
pub mod keeper;
mod locks;
pub mod metrics;
pub mod postgres;
pub mod proxy;
pub mod role;
pub mod sentinel;
pub mod shutdown;
pub mod store;
pub mod systemd;
pub mod telemetry;
