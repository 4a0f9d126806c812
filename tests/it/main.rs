//! The integration tests: one binary, one module per area (`cluster_*` start real etcd,
//! PostgreSQL and the crate's binaries; `postgres_*`, `store_*`, `systemd_*` drive one
//! component; `cli_*`/`ctl_*`/`units` check the command line and the shipped files). Shared
//! harness in `support/`. Run one area with `scripts/test.sh cluster_failover` (a name filter).

mod support;

mod cli_bad_input;
mod cluster_advertise;
mod cluster_crash_loop;
mod cluster_etcd_tls;
mod cluster_existing;
mod cluster_failover;
mod cluster_fencing;
mod cluster_harness;
mod cluster_health_api;
mod cluster_init;
mod cluster_maintenance;
mod cluster_metrics;
mod cluster_pitr;
mod cluster_planned_switchover;
mod cluster_read_only_proxy;
mod cluster_rejoin;
mod cluster_resync_backoff;
mod cluster_rewind;
mod cluster_slots;
mod cluster_standby_cluster;
mod cluster_standby_lag;
mod cluster_store_full;
mod cluster_store_outage;
mod cluster_switchover;
mod cluster_sync;
mod ctl_commands;
mod keeper_duplicate_uid;
mod local_cluster_script;
mod metrics_proxy;
mod postgres_client_close;
mod postgres_instance;
mod postgres_stop_bounded;
mod proxy_etcd;
mod proxy_hold;
mod store_etcd;
mod store_etcd_cluster;
mod store_tls;
mod systemd_journal;
mod systemd_keeper;
mod systemd_notify;
mod systemd_proxy_read_only;
mod systemd_sentinel;
mod units;
