//! The systemd service protocol: readiness, status, watchdog, stopping, start-timeout extension
//! (`sd_notify`) and socket activation (`LISTEN_FDS`). Every call is a no-op when the process
//! was not started by systemd, so roles call it unconditionally.
//!
//! # How a binary and its role use it
//!
//! The binary reads the service environment once, first thing in `main`, with
//! [`service_env`]. It stays in our environment (changing the environment of a running program
//! is unsafe); every child is spawned without it instead (`src/postgres/mod.rs`
//! `strip_private_env`): a PostgreSQL built with systemd support would otherwise send its own
//! READY=1 to our unit.
//! The role's `run` then receives an `Arc<Notifier>` and:
//!
//! - **readiness**: calls [`Notifier::ready`] once it really serves (proxy: listening and
//!   clusterdata read once; sentinel: first successful store read and info publish; keeper:
//!   info published and, when it has a db, PostgreSQL accepting connections). Until then,
//!   [`Notifier::status`] says what it waits for.
//! - **status**: calls [`Notifier::status`] with one human line whenever its state may have
//!   changed (only changes are sent), e.g. `routing to 10.0.0.5:5432`, `leader; cluster normal;
//!   master keeper1`, `standby following keeper2, replay lag 0 B`.
//! - **watchdog**: sleeps at most [`Notifier::loop_interval`]`(its normal interval)` between
//!   main-loop iterations and calls [`Notifier::watchdog`] on every iteration, and inside any
//!   bounded wait that can outlast a quarter of the watchdog period. Never from a separate timer
//!   task: a stuck loop must stop the pings.
//! - **long work** (initdb, pg_basebackup, PostgreSQL start-up and stop): awaits it through
//!   [`Notifier::long_work`]`(what, progress, work)`, which extends the start/stop timeout,
//!   pings the watchdog and shows the latest progress line (`pg_basebackup: 1.2 GiB of 4.0
//!   GiB`) while the work runs; or calls [`Notifier::extend_timeout`] itself at least every
//!   `by`.
//! - **journal fields**: the keeper calls `telemetry::set_keeper_uid` once its uid is known and
//!   `telemetry::set_db_uid` whenever its db changes (CLUSTER_NAME and ROLE are always there).
//! - **stopping**: calls [`Notifier::stopping`] when `shutdown` is cancelled, before the slow
//!   part of stopping (closing sessions, stopping PostgreSQL).
//!
//! Roles get the notifier in their `RoleContext` (src/role.rs): `keeper::run(cfg, ctx)`,
//! `sentinel::run(cfg, ctx)`, `proxy::run(cfg, ctx)`.

mod activation;
mod notify;

pub use activation::{Activated, ActivatedListeners, ActivationError, READ_ONLY_SOCKET_NAME};
pub use notify::{LONG_WORK_EXTEND, LONG_WORK_STEP, Notifier};

use std::sync::Arc;

/// What systemd told this process through its environment.
pub struct ServiceEnv {
    pub notifier: Arc<Notifier>,
    /// Sockets passed by socket activation (the proxy's `stolon-proxy@.socket`).
    pub activated: Activated,
}

/// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC`/`WATCHDOG_PID` and `LISTEN_FDS`/`LISTEN_PID` (see the
/// module documentation for how children are kept from them).
pub fn service_env() -> ServiceEnv {
    ServiceEnv {
        notifier: Arc::new(Notifier::from_env()),
        activated: Activated::new(
            listenfd::ListenFd::from_env(),
            std::env::var("LISTEN_FDNAMES").ok(),
        ),
    }
}
