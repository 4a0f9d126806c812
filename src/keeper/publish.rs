//! Publishing `keepers/info/<uid>` (reference §3.3 KeeperInfo) from its own task, so the
//! sentinel keeps seeing a live keeper while the main loop is busy in a long action (a
//! pg_basebackup of a big database), and the info goes out at once when the loop asks (right
//! after a promotion).

use crate::cluster::{KeeperInfo, PostgresBinaryVersion, PostgresState, new_uid};
use crate::postgres::{LocalConn, PgClient};
use crate::store::Store;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the main loop shares with the publisher.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub cluster_uid: String,
    pub db_uid: String,
    pub generation: i64,
    pub running: bool,
    pub sleep_interval: Duration,
    pub request_timeout: Duration,
}

pub(super) struct Shared {
    snapshot: Mutex<Snapshot>,
    /// Last time the store answered a read or took a write: the basis of self-fencing.
    last_store_ok: Mutex<Instant>,
    publish_now: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values are plain data, valid even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn new(snapshot: Snapshot) -> Arc<Shared> {
        Arc::new(Shared {
            snapshot: Mutex::new(snapshot),
            last_store_ok: Mutex::new(Instant::now()),
            publish_now: Notify::new(),
        })
    }

    pub fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut lock(&self.snapshot));
    }

    pub fn snapshot(&self) -> Snapshot {
        lock(&self.snapshot).clone()
    }

    pub fn store_ok(&self) {
        *lock(&self.last_store_ok) = Instant::now();
    }

    pub fn last_store_ok(&self) -> Instant {
        *lock(&self.last_store_ok)
    }

    pub fn publish_now(&self) {
        self.publish_now.notify_one();
    }
}

/// The parts of the info that never change during a keeper process.
#[derive(Debug, Clone)]
pub(super) struct Identity {
    pub uid: String,
    pub boot_uuid: String,
    pub version: PostgresBinaryVersion,
    pub advertise_address: String,
    pub advertise_port: String,
    pub can_be_master: bool,
    pub can_be_synchronous_replica: bool,
    pub pgdata: PathBuf,
    pub conn: LocalConn,
}

pub(super) async fn publisher(
    store: Store,
    shared: Arc<Shared>,
    id: Identity,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    loop {
        let snap = shared.snapshot();
        // Upstream publishes only once the cluster is known: a keeper of no cluster has
        // nothing the sentinel could use.
        if !snap.cluster_uid.is_empty() {
            let info = info(&id, &snap).await;
            match store.put_keeper_info(&info).await {
                Ok(()) => {
                    shared.store_ok();
                    if failing {
                        tracing::info!(keeper = %id.uid, "keeper info published again");
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(keeper = %id.uid, error = %e, "cannot publish keeper info");
                    }
                    failing = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(snap.sleep_interval) => {}
            _ = shared.publish_now.notified() => {}
        }
    }
}

async fn info(id: &Identity, snap: &Snapshot) -> KeeperInfo {
    let mut state = PostgresState {
        uid: snap.db_uid.clone(),
        generation: snap.generation,
        listen_address: id.advertise_address.clone(),
        port: id.advertise_port.clone(),
        ..Default::default()
    };
    if snap.running {
        let mut conn = id.conn.clone();
        conn.timeout = snap.request_timeout;
        let gathered = match PgClient::connect(&conn).await {
            Ok(client) => client.gather_state(&id.pgdata).await,
            Err(e) => Err(e),
        };
        match gathered {
            Ok(s) => {
                state.healthy = true;
                state.system_id = s.system_id;
                state.timeline_id = s.timeline_id;
                state.x_log_pos = s.x_log_pos;
                state.timelines_history = s.timelines_history;
                state.pg_parameters = s.pg_parameters;
                state.synchronous_standbys = s.synchronous_standbys;
                state.older_wal_file = s.older_wal_file;
            }
            // Reported as unhealthy; the sentinel decides what that means.
            Err(e) => tracing::debug!(keeper = %id.uid, error = %e, "cannot read postgres state"),
        }
    }
    KeeperInfo {
        info_uid: new_uid(),
        uid: id.uid.clone(),
        cluster_uid: snap.cluster_uid.clone(),
        boot_uuid: id.boot_uuid.clone(),
        postgres_binary_version: id.version,
        priority: None,
        postgres_state: Some(state),
        can_be_master: Some(id.can_be_master),
        can_be_synchronous_replica: Some(id.can_be_synchronous_replica),
    }
}
