//! stolon: a PostgreSQL high-availability manager (keeper, sentinel, proxy, stolonctl) on etcd v3.

pub mod cluster;
