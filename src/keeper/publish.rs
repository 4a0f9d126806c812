//! Publishing `keepers/info/<uid>` (upstream's KeeperInfo) from its own task, so the
//! sentinel keeps seeing a live keeper while the main loop is busy in a long action (a
//! pg_basebackup of a big database), and the info goes out at once when the loop asks (right
//! after a promotion).

use super::fence::{BootInstant, Fence};
use crate::cluster::{
    DbUid, Generation, KeeperInfo, KeeperUid, PostgresBinaryVersion, PostgresState, new_uid,
};
use crate::metrics::{HealthBoard, Observation, boot_now};
use crate::postgres::{LocalConn, PgClient};
use crate::store::Store;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the main loop shares with the publisher.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub cluster_uid: String,
    pub db_uid: DbUid,
    pub generation: Generation,
    pub running: bool,
    /// Where the WAL of a master stopped for a switchover ends (dbstate's record).
    pub stopped_x_log_pos: Option<u64>,
    /// How often the info goes out (see `src/cluster/fencing.rs`).
    pub publish_every: Duration,
    pub request_timeout: Duration,
}

/// What the last successful publish said about the local PostgreSQL.
#[derive(Debug, Clone)]
pub(super) struct Published {
    /// When its state was read (before connecting to PostgreSQL).
    pub gathered_at: Instant,
    pub db_uid: DbUid,
    /// PostgreSQL accepted a connection and answered every query.
    pub healthy: bool,
    pub streaming_standbys: usize,
    pub replay_lag: Option<u64>,
}

pub(super) struct Shared {
    snapshot: Mutex<Snapshot>,
    publish_now: Notify,
    published: Mutex<Option<Published>>,
    /// Signalled after every successful publish (readiness and status follow it).
    published_notify: Notify,
    /// What the health endpoints answer from: every look at PostgreSQL goes there, published
    /// or not (a standby cut off from the store still serves reads).
    health: HealthBoard,
}

use crate::locks::lock;

impl Shared {
    pub(super) fn new(snapshot: Snapshot, health: HealthBoard) -> Arc<Shared> {
        health.postgres_running(snapshot.running);
        Arc::new(Shared {
            snapshot: Mutex::new(snapshot),
            publish_now: Notify::new(),
            published: Mutex::new(None),
            published_notify: Notify::new(),
            health,
        })
    }

    /// Every start and stop of PostgreSQL passes here, so the health endpoints see it at once.
    pub(super) fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        let running = {
            let mut snap = lock(&self.snapshot);
            f(&mut snap);
            snap.running
        };
        self.health.postgres_running(running);
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        lock(&self.snapshot).clone()
    }

    pub(super) fn publish_now(&self) {
        self.publish_now.notify_one();
    }

    pub(super) fn published(&self) -> Option<Published> {
        lock(&self.published).clone()
    }

    /// Resolves after the next successful publish (or at once if one happened since the last
    /// call returned).
    pub(super) async fn wait_published(&self) {
        self.published_notify.notified().await
    }
}

/// The parts of the info that never change during a keeper process.
#[derive(Debug, Clone)]
pub(super) struct Identity {
    pub uid: KeeperUid,
    pub boot_uuid: String,
    pub version: PostgresBinaryVersion,
    pub advertise_address: String,
    pub advertise_port: String,
    pub can_be_master: bool,
    pub priority: u32,
    pub can_be_synchronous_replica: bool,
    pub pgdata: PathBuf,
    pub conn: LocalConn,
}

/// A failed publication is retried this much sooner than the next regular one: a master's
/// fence deadline runs meanwhile.
const RETRY_DIVISOR: u32 = 4;

/// Publishes the info every `publish_every`, and at once when asked. Each success renews the
/// fence deadline, counted from when the info was sent (see `fence.rs`).
pub(super) async fn publisher(
    store: Store,
    shared: Arc<Shared>,
    fence: Arc<Fence>,
    id: Identity,
    shutdown: CancellationToken,
) {
    let mut failing = false;
    shared.health.publisher(&id.uid, store.timeout());
    loop {
        // Before the snapshot: a start or stop after it makes this look about another
        // instance, and the board drops it.
        let instance = shared.health.instance();
        let snap = shared.snapshot();
        // Upstream publishes only once the cluster is known: a keeper of no cluster has
        // nothing the sentinel could use.
        if !snap.cluster_uid.is_empty() {
            let gathered_at = Instant::now();
            let looked_at = boot_now();
            let (info, local) = info(&id, &snap).await;
            if snap.running {
                shared
                    .health
                    .observed(instance, observation(looked_at, &info, &local));
            }
            let sent_at = BootInstant::now();
            let sent_at_boot = boot_now();
            match store.put_keeper_info(&info).await {
                Ok(()) => {
                    fence.published(sent_at);
                    shared.health.published(sent_at_boot);
                    *lock(&shared.published) = Some(Published {
                        gathered_at,
                        db_uid: snap.db_uid.clone(),
                        healthy: info.postgres_state.as_ref().is_some_and(|s| s.healthy),
                        streaming_standbys: local.streaming_standbys,
                        replay_lag: local.replay_lag,
                    });
                    shared.published_notify.notify_one();
                    if failing {
                        tracing::info!(keeper = %id.uid, "keeper info published again");
                    }
                    failing = false;
                }
                // A full store (NOSPACE) refuses every write, the sentinel's clusterdata
                // compare-and-swap too: while it still answers reads and keeps our lease (and
                // so our info) alive, no other master can be elected, and the master keeps
                // running. The sentinel does not age keeper infos while the store is full.
                Err(e) if e.is_no_space() => {
                    let in_contact = store.get_cluster_data().await.is_ok()
                        && store.lease_lost_since().is_none();
                    if in_contact {
                        fence.published(sent_at);
                        shared.health.published(sent_at_boot);
                    }
                    if !failing {
                        tracing::warn!(keeper = %id.uid, error = %e, in_contact, "store full (NOSPACE): cannot publish keeper info; a master keeps running while the store answers reads and keeps the lease");
                    }
                    failing = true;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(keeper = %id.uid, error = %e, "cannot publish keeper info");
                    }
                    failing = true;
                }
            }
        }
        let next = if failing {
            snap.publish_every / RETRY_DIVISOR
        } else {
            snap.publish_every
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
            _ = shared.publish_now.notified() => {}
        }
    }
}

/// What the info does not carry but the keeper's status line and health endpoints show.
#[derive(Default)]
struct LocalOnly {
    streaming_standbys: usize,
    replay_lag: Option<u64>,
    in_recovery: bool,
}

fn observation(at: std::time::Duration, info: &KeeperInfo, local: &LocalOnly) -> Observation {
    let state = info.postgres_state.as_ref();
    Observation {
        at,
        db_uid: state.map(|s| s.uid.clone()).unwrap_or_default(),
        accepting: state.is_some_and(|s| s.healthy),
        in_recovery: local.in_recovery,
        timeline: state.map_or(0, |s| s.timeline_id),
        x_log_pos: state.map_or(0, |s| s.x_log_pos),
    }
}

async fn info(id: &Identity, snap: &Snapshot) -> (KeeperInfo, LocalOnly) {
    let mut local = LocalOnly::default();
    let mut state = PostgresState {
        uid: snap.db_uid.clone(),
        generation: snap.generation,
        listen_address: id.advertise_address.clone(),
        port: id.advertise_port.clone(),
        stopped_x_log_pos: snap.stopped_x_log_pos.filter(|_| !snap.running),
        ..Default::default()
    };
    if snap.running {
        let mut conn = id.conn.clone();
        conn.timeout = snap.request_timeout;
        let gathered = match PgClient::connect(&conn).await {
            Ok(client) => {
                let s = client.gather_state(&id.pgdata).await;
                client.close().await;
                s
            }
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
                local.streaming_standbys = s.streaming_standbys;
                local.replay_lag = s.replay_lag;
                local.in_recovery = s.in_recovery;
            }
            // Reported as unhealthy; the sentinel decides what that means.
            Err(e) => tracing::debug!(keeper = %id.uid, error = %e, "cannot read postgres state"),
        }
    }
    let info = KeeperInfo {
        info_uid: new_uid(),
        uid: id.uid.clone(),
        cluster_uid: snap.cluster_uid.clone(),
        boot_uuid: id.boot_uuid.clone(),
        postgres_binary_version: id.version,
        priority: Some(i64::from(id.priority)),
        postgres_state: Some(state),
        can_be_master: Some(id.can_be_master),
        can_be_synchronous_replica: Some(id.can_be_synchronous_replica),
    };
    (info, local)
}
