//! The keeper's I/O loop around the pure [`plan`](super::plan): observe, plan, execute, publish.

use super::KeeperConfig;
use super::error::KeeperError;
use super::plan::{DesiredConfig, KeeperFacts, LocalRole, LocalState, PlanEnd, WaitReason, plan};
use super::publish::{self, Identity, Shared, Snapshot};
use super::state::{DataDir, KeeperState, resolve_uid};
use super::validate::{refuse_root, validate_auth, warn_advertise_address};
use crate::cluster::{ClusterData, ClusterSpec, DEFAULT_SLEEP_INTERVAL};
use crate::postgres::{
    self, DEFAULT_SOCKET_DIR, LocalConn, PgBinaries, PgClient, PgProcess, stop_stale_instance,
};
use crate::store::{Store, StoreConfig, StoreError, StoreEvent};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Upstream's floor for info TTLs.
const MIN_LEASE_TTL: Duration = Duration::from_secs(20);
/// How long a fast shutdown may take before it gets harder (the postgres module escalates).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Replans in a row without sleeping (after init/resync) before the loop sleeps anyway.
const MAX_REPLANS: u32 = 3;

/// The spec timings the keeper follows, adopted from every clusterdata read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub sleep_interval: Duration,
    pub request_timeout: Duration,
    pub fail_interval: Duration,
    pub db_wait_ready_timeout: Duration,
}

impl Timing {
    fn from_spec(spec: &ClusterSpec) -> Timing {
        Timing {
            sleep_interval: spec.sleep_interval().to_std(),
            request_timeout: spec.request_timeout().to_std(),
            fail_interval: spec.fail_interval().to_std(),
            db_wait_ready_timeout: spec.db_wait_ready_timeout().to_std(),
        }
    }

    /// How long a master may go without the store before it fences itself. The sentinel
    /// declares a keeper failed `failInterval` after its last info update it saw; our last
    /// store contact is at least that recent, so fencing a margin earlier (a sleepInterval, at
    /// most half of failInterval) stops the old master before a new one can be elected.
    pub fn fence_after(&self) -> Duration {
        let margin = self.sleep_interval.min(self.fail_interval / 2);
        self.fail_interval.saturating_sub(margin)
    }
}

pub(super) struct Keeper {
    pub cfg: KeeperConfig,
    pub dir: DataDir,
    pub pgdata: PathBuf,
    pub bins: PgBinaries,
    pub facts: KeeperFacts,
    pub store: Store,
    /// The postgres we started; `None` when stopped.
    pub pg: Option<PgProcess>,
    /// The config last written into PGDATA by this process.
    pub applied: Option<DesiredConfig>,
    pub keeper_state: KeeperState,
    pub timing: Timing,
    pub shared: Arc<Shared>,
    pub local_conn: LocalConn,
    /// Last plan outcome, to log a wait or an error once rather than every iteration.
    last_end: Option<PlanEnd>,
}

/// Runs the keeper until `shutdown`; then stops PostgreSQL (fast) and returns `Ok`.
pub async fn run(
    cfg: KeeperConfig,
    store_cfg: StoreConfig,
    shutdown: CancellationToken,
) -> Result<(), KeeperError> {
    refuse_root()?;
    validate_auth(&cfg)?;
    let advertise_address = cfg
        .pg_advertise_address
        .clone()
        .unwrap_or_else(|| cfg.pg_listen_address.clone());
    warn_advertise_address(&advertise_address);
    let advertise_port = cfg.pg_advertise_port.unwrap_or(cfg.pg_port);

    let dir = DataDir::create(&cfg.data_dir)?;
    let _lock = if cfg.disable_data_dir_locking {
        None
    } else {
        let l = dir.lock()?;
        tracing::info!(data_dir = %dir.root().display(), "exclusive lock on data dir taken");
        Some(l)
    };
    let keeper_state = resolve_uid(&dir, cfg.uid.as_deref())?;
    let uid = keeper_state.uid.clone();
    tracing::info!(keeper = %uid, "keeper uid");

    let bins = PgBinaries::locate(cfg.pg_bin_path.as_deref())?;
    let version = bins.version().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot get the postgres binary version; reporting 0.0");
        Default::default()
    });

    let store = Store::connect(&store_cfg).await?;
    // Learn the spec timings before the first info put takes the lease.
    let mut timing = Timing::from_spec(&ClusterSpec::default());
    timing.sleep_interval = DEFAULT_SLEEP_INTERVAL.to_std();
    if let Ok(Some(cd)) = store.get_cluster_data().await {
        timing = Timing::from_spec(&cd.value.cluster.spec);
    }
    store.set_lease_ttl(timing.sleep_interval.max(MIN_LEASE_TTL));

    let pgdata = dir.pgdata();
    // The keeper always starts postgres itself, as its child: one left by a crashed keeper
    // would run with a config nobody checked against the cluster data.
    stop_stale_instance(&pgdata, STOP_TIMEOUT).await?;

    let boot_uuid = uuid::Uuid::new_v4().to_string();
    let local_conn = LocalConn {
        socket_dir: PathBuf::from(DEFAULT_SOCKET_DIR),
        port: cfg.pg_port,
        user: cfg.pg_su_username.clone(),
        password: cfg.pg_su_password.clone(),
        timeout: timing.request_timeout,
    };
    let db_state = dir.load_db_state()?;
    let shared = Shared::new(Snapshot {
        cluster_uid: keeper_state.cluster_uid.clone(),
        db_uid: db_state.uid,
        generation: db_state.generation,
        running: false,
        sleep_interval: timing.sleep_interval,
        request_timeout: timing.request_timeout,
    });
    let identity = Identity {
        uid: uid.clone(),
        boot_uuid: boot_uuid.clone(),
        version,
        advertise_address,
        advertise_port: advertise_port.to_string(),
        can_be_master: cfg.can_be_master,
        can_be_synchronous_replica: cfg.can_be_synchronous_replica,
        pgdata: pgdata.clone(),
        conn: local_conn.clone(),
    };
    let publisher_stop = shutdown.child_token();
    let publisher = tokio::spawn(publish::publisher(
        store.clone(),
        shared.clone(),
        identity,
        publisher_stop.clone(),
    ));

    let mut keeper = Keeper {
        cfg,
        dir,
        pgdata,
        bins,
        facts: KeeperFacts { uid, boot_uuid },
        store,
        pg: None,
        applied: None,
        keeper_state,
        timing,
        shared,
        local_conn,
        last_end: None,
    };
    keeper.main_loop(&shutdown).await;
    publisher_stop.cancel();
    let _ = publisher.await;
    keeper.stop_postgres("keeper shutting down").await
}

impl Keeper {
    async fn main_loop(&mut self, shutdown: &CancellationToken) {
        let mut watch: Option<mpsc::Receiver<StoreEvent>> = None;
        let mut replans = 0;
        loop {
            if watch.is_none() {
                match self.store.watch().await {
                    Ok(rx) => watch = Some(rx),
                    Err(e) => tracing::warn!(error = %e, "cannot watch the store; polling only"),
                }
            }
            let end = tokio::select! {
                _ = shutdown.cancelled() => return,
                end = self.sync_once() => end,
            };
            self.shared.publish_now();
            if end == Some(PlanEnd::Replan) && replans < MAX_REPLANS {
                replans += 1;
                continue;
            }
            replans = 0;

            let deadline = Instant::now() + self.timing.sleep_interval;
            let fence_check = self.fence_deadline();
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    ev = next_event(&mut watch) => match ev {
                        // Fast failover: act on the sentinel's decision at once.
                        Some(StoreEvent::ClusterData) => break,
                        Some(_) => continue,
                        None => {
                            watch = None;
                            break;
                        }
                    },
                    why = pg_exited(&mut self.pg) => {
                        tracing::error!(keeper = %self.facts.uid, "postgres exited unexpectedly: {why}");
                        self.pg = None;
                        self.shared.update(|s| s.running = false);
                        break;
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = sleep_until_opt(fence_check) => break,
                }
            }
        }
    }

    /// When a running master must check the store again to fence itself in time.
    fn fence_deadline(&mut self) -> Option<Instant> {
        let running_master = self.pg.as_mut().is_some_and(|p| p.is_running())
            && postgres::local_role(&self.pgdata) == postgres::LocalRole::Master;
        running_master.then(|| self.shared.last_store_ok() + self.timing.fence_after())
    }

    fn fenced(&self) -> bool {
        let limit = self.timing.fence_after();
        let now = Instant::now();
        let lost_lease = self
            .store
            .lease_lost_since()
            .is_some_and(|t| t.elapsed() > limit);
        lost_lease || now.duration_since(self.shared.last_store_ok()) > limit
    }

    /// One observe-plan-execute pass. Returns how the plan ended, `None` if it did not run.
    async fn sync_once(&mut self) -> Option<PlanEnd> {
        let (cd, fenced) = match self.read_cluster_data().await {
            Ok(cd) => (cd, false),
            Err(ReadFailure::BadData(e)) => {
                tracing::error!(keeper = %self.facts.uid, error = %e, "unusable cluster data; keeping the current state");
                return None;
            }
            Err(ReadFailure::Unreachable(e)) => {
                if !self.fenced() {
                    tracing::warn!(keeper = %self.facts.uid, error = %e, "cannot read cluster data; keeping the current state");
                    return None;
                }
                (None, true)
            }
        };
        let local = match self.observe(cd.as_ref()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(keeper = %self.facts.uid, error = %e, "cannot read the local state");
                return None;
            }
        };
        let p = plan(&self.facts, cd.as_ref(), &local, fenced);
        self.log_end(&p.end);
        for action in &p.actions {
            tracing::debug!(keeper = %self.facts.uid, ?action, "executing");
            if let Err(e) = self.execute(action).await {
                tracing::error!(keeper = %self.facts.uid, action = action.name(), error = %e, "action failed; retrying on the next iteration");
                self.after_action();
                return None;
            }
            self.after_action();
        }
        Some(p.end)
    }

    fn after_action(&mut self) {
        let running = self.pg.as_mut().is_some_and(|p| p.is_running());
        let db_state = self.dir.load_db_state().unwrap_or_default();
        self.shared.update(|s| {
            s.running = running;
            s.db_uid = db_state.uid;
            s.generation = db_state.generation;
        });
    }

    async fn read_cluster_data(&mut self) -> Result<Option<ClusterData>, ReadFailure> {
        // A running master must not wait on a hung store past its fencing deadline.
        let res = match self.fence_deadline() {
            Some(deadline) => {
                let now = Instant::now();
                let budget = deadline
                    .saturating_duration_since(now)
                    .clamp(Duration::from_millis(100), self.store.timeout());
                tokio::time::timeout(budget, self.store.get_cluster_data())
                    .await
                    .unwrap_or(Err(StoreError::Timeout(budget)))
            }
            None => self.store.get_cluster_data().await,
        };
        match res {
            Ok(v) => {
                self.shared.store_ok();
                let cd = v.map(|v| v.value);
                if let Some(cd) = &cd {
                    self.adopt(cd).map_err(ReadFailure::BadData)?;
                }
                Ok(cd)
            }
            Err(e @ StoreError::BadValue { .. }) => {
                self.shared.store_ok();
                Err(ReadFailure::BadData(e.into()))
            }
            Err(e) => Err(ReadFailure::Unreachable(e)),
        }
    }

    /// Adopts the spec timings and remembers the cluster uid.
    fn adopt(&mut self, cd: &ClusterData) -> Result<(), KeeperError> {
        self.timing = Timing::from_spec(&cd.cluster.spec);
        self.local_conn.timeout = self.timing.request_timeout;
        let timing = self.timing;
        if self.keeper_state.cluster_uid != cd.cluster.uid {
            self.keeper_state.cluster_uid = cd.cluster.uid.clone();
            self.dir.save_keeper_state(&self.keeper_state)?;
        }
        let cluster_uid = cd.cluster.uid.clone();
        self.shared.update(|s| {
            s.cluster_uid = cluster_uid;
            s.sleep_interval = timing.sleep_interval;
            s.request_timeout = timing.request_timeout;
        });
        Ok(())
    }

    async fn observe(&mut self, cd: Option<&ClusterData>) -> Result<LocalState, KeeperError> {
        let db_state = self.dir.load_db_state()?;
        let initialized = postgres::is_initialized(&self.pgdata);
        let role = if !initialized {
            LocalRole::None
        } else {
            match postgres::local_role(&self.pgdata) {
                postgres::LocalRole::Master => LocalRole::Master,
                postgres::LocalRole::Standby => LocalRole::Standby,
            }
        };
        let running = self.pg.as_mut().is_some_and(|p| p.is_running());
        if !running && let Some(mut gone) = self.pg.take() {
            let why = gone.exited().await;
            tracing::error!(keeper = %self.facts.uid, "postgres exited unexpectedly: {why}");
        }
        let mut in_sync_standbys = None;
        let mut pending_restart = false;
        // Only ask postgres what the plan can use: the keeper connects on every iteration
        // otherwise, which is noise in the server log.
        let want_pending = cd.is_some_and(|cd| cd.cluster.spec.automatic_pg_restart());
        let want_sync = self.applied.as_ref().is_some_and(|a| a.hba.internal_only);
        if running && (want_pending || want_sync) {
            match PgClient::connect(&self.local_conn).await {
                Ok(client) => {
                    if want_pending {
                        pending_restart = client.pending_restart().await.unwrap_or(false);
                    }
                    if want_sync {
                        in_sync_standbys = client.synchronous_standbys().await.ok();
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot connect to postgres"),
            }
        }
        Ok(LocalState {
            db_state,
            initialized,
            role,
            running,
            applied: self.applied.clone(),
            in_sync_standbys,
            pending_restart,
        })
    }

    fn log_end(&mut self, end: &PlanEnd) {
        let uid = &self.facts.uid;
        if self.last_end.as_ref() != Some(end) {
            match end {
                PlanEnd::Converged { db_uid, generation } => {
                    tracing::info!(keeper = %uid, db = %db_uid, generation, "db converged")
                }
                PlanEnd::Wait(reason) => {
                    tracing::info!(keeper = %uid, "waiting: {}", describe_wait(reason))
                }
                PlanEnd::Error(e) => tracing::error!(keeper = %uid, "{e}"),
                PlanEnd::Replan => {}
            }
        }
        self.last_end = Some(end.clone());
    }

    pub(super) async fn stop_postgres(&mut self, why: &str) -> Result<(), KeeperError> {
        if let Some(pg) = self.pg.take() {
            tracing::info!(keeper = %self.facts.uid, "stopping postgres: {why}");
            pg.stop_fast(STOP_TIMEOUT).await?;
        }
        self.shared.update(|s| s.running = false);
        Ok(())
    }
}

enum ReadFailure {
    /// The store answered with something we cannot use.
    BadData(KeeperError),
    Unreachable(StoreError),
}

fn describe_wait(reason: &WaitReason) -> String {
    match reason {
        WaitReason::NoClusterData => "no cluster data available, waiting for it to appear".into(),
        WaitReason::KeeperNotInClusterData => {
            "our keeper data is not available, waiting for the sentinel to add it".into()
        }
        WaitReason::NoDbAssigned => "no db assigned".into(),
        WaitReason::BootUuidMismatch => {
            "the cluster data has not seen this keeper process yet (bootUUID), waiting for the sentinel".into()
        }
        WaitReason::StoreUnreachable => {
            "store unreachable for longer than the fencing limit; a master stays stopped until the store is back".into()
        }
        WaitReason::RoleUndefined => "our db has no role yet".into(),
        WaitReason::FollowedDbAddressUnknown(db) => {
            format!("followed db {db} has not published its address yet")
        }
    }
}

async fn next_event(watch: &mut Option<mpsc::Receiver<StoreEvent>>) -> Option<StoreEvent> {
    match watch {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn pg_exited(pg: &mut Option<PgProcess>) -> String {
    match pg {
        Some(p) => p.exited().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
