//! The keeper's I/O loop around the pure [`plan`](super::plan): observe, plan, execute, publish.

use super::KeeperConfig;
use super::error::KeeperError;
use super::fence::Fence;
use super::plan::{
    Action, DesiredConfig, KeeperFacts, LocalRole, LocalState, PlanEnd, WaitReason, plan,
};
use super::publish::{self, Identity, Shared, Snapshot};
use super::state::{DataDir, DbState, KeeperState, resolve_uid};
use super::status::{
    AssignedDb, Followed, Outcome, PgHealth, ReadyFacts, StatusFacts, action_status, is_ready,
    status_line,
};
use super::validate::{refuse_root, validate_auth, warn_advertise_address};
use super::work::{Work, supervise};
use crate::cluster::{
    ClusterData, ClusterPhase, ClusterSpec, DEFAULT_SLEEP_INTERVAL, DbRole, DbUid, FenceTiming,
    FollowType, KeeperUid,
};
use crate::metrics::{KeeperMetrics, PgRole};
use crate::postgres::{
    self, LocalConn, PgBinaries, PgClient, PgError, PgProcess, Pgdata, ServerParameters,
    stop_stale_instance,
};
use crate::role::RoleContext;
use crate::store::{Store, StoreError, StoreEvent};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Upstream's floor for info TTLs.
const MIN_LEASE_TTL: Duration = Duration::from_secs(20);
/// How long the stop at keeper start (a stale instance) and at keeper shutdown may take in all,
/// fast shutdown then immediate shutdown then SIGKILL (the postgres module escalates within
/// it). Nothing waits on the loop then, and a fast shutdown's checkpoint spares the next start
/// a crash recovery, so it gets upstream's 60 s plus the harder steps.
const SHUTDOWN_STOP: Duration = Duration::from_secs(70);
/// Bounds of a stop the loop does (restart, demotion, fencing, reinitialization); see
/// [`Timing::loop_stop`].
const LOOP_STOP_MAX: Duration = Duration::from_secs(30);
const LOOP_STOP_MIN: Duration = Duration::from_secs(5);
/// Replans in a row without sleeping (after init/resync) before the loop sleeps anyway.
const MAX_REPLANS: u32 = 3;
/// How often the info goes out while a planned switchover is before its promotion.
const SWITCHOVER_PUBLISH_EVERY: Duration = Duration::from_millis(50);
/// After an iteration that changed PostgreSQL (a promotion, a standby told to follow another
/// db, a restart), the next [`QUICK_LOOKS`] iterations come this far apart, so what changed
/// is reported within a fraction of sleepInterval: the sentinel names the synchronous
/// standby of a new master only once that standby reports following its timeline, and in
/// vm-tests (sleepInterval 1s) it waited up to a whole sleepInterval for that report.
const QUICK_LOOK: Duration = Duration::from_millis(200);
const QUICK_LOOKS: u32 = 5;
/// The watchdog's allowance for the stop at keeper start and shutdown.
const STOP_ALLOWANCE: Duration = SHUTDOWN_STOP.saturating_add(GRACE);
/// initdb reports no progress; it takes seconds, minutes on a very slow disk.
const INITDB_ALLOWANCE: Duration = Duration::from_secs(5 * 60);
/// How long pg_basebackup may go without copying a byte: before the copy it waits for the
/// master's (fast) checkpoint, after it it fsyncs the whole data directory.
pub(super) const BASEBACKUP_STALL: Duration = Duration::from_secs(2 * 60);
/// How long a fencing stop waits after the immediate shutdown before SIGKILL, and after it.
const IMMEDIATE_GRACE: Duration = Duration::from_secs(2);
/// The program the fence guard runs: this one (see fence.rs).
const GUARD_PROGRAM: &str = "/proc/self/exe";
/// Margin on top of the bounds the steps have themselves.
const GRACE: Duration = Duration::from_secs(5);

/// The spec timings the keeper follows, adopted from every clusterdata read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub sleep_interval: Duration,
    pub request_timeout: Duration,
    pub db_wait_ready_timeout: Duration,
    /// How long an archive recovery (initMode pitr) may take to end (upstream's use of it).
    pub sync_timeout: Duration,
    /// After it the sentinel gives the init up and tries again: a restore may take that long.
    pub init_timeout: Duration,
    pub fence: FenceTiming,
}

impl Timing {
    fn from_spec(spec: &ClusterSpec) -> Timing {
        Timing {
            sleep_interval: spec.sleep_interval().to_std(),
            request_timeout: spec.request_timeout().to_std(),
            db_wait_ready_timeout: spec.db_wait_ready_timeout().to_std(),
            sync_timeout: spec.sync_timeout().to_std(),
            init_timeout: spec.init_timeout().to_std(),
            fence: spec.fence_timing(),
        }
    }

    /// How long a stop inside the loop may take in all, escalation included: min(
    /// dbWaitReadyTimeout, 30 s), at least 5 s. ⚠ Upstream runs `pg_ctl stop -w -m fast`
    /// with pg_ctl's 60 s and no escalation, so a shutdown stuck on a stopped child (e.g. a
    /// SIGSTOPped walreceiver) holds the keeper loop; ours ends in an immediate shutdown and
    /// SIGKILL within this bound. A standby's restart or a demotion that takes longer than the
    /// time a start may take is stuck, not slow; the floor leaves a fast shutdown its
    /// checkpoint with a tiny dbWaitReadyTimeout.
    pub(super) fn loop_stop(&self) -> Duration {
        self.db_wait_ready_timeout
            .min(LOOP_STOP_MAX)
            .max(LOOP_STOP_MIN)
    }

    /// How long after its last successful info publication a master may still run (the rule
    /// is in `src/cluster/fencing.rs`).
    pub(super) fn fence_after(&self) -> Duration {
        self.fence.fence_after
    }
}

pub(super) struct Keeper {
    pub cfg: KeeperConfig,
    pub dir: DataDir,
    pub pgdata: Pgdata,
    pub bins: PgBinaries,
    /// Major version of `bins` (`None` if `postgres --version` could not be read).
    pub pg_major: Option<i32>,
    /// What `bins` accepts in postgresql.conf (empty if it could not be listed).
    pub server_parameters: ServerParameters,
    pub facts: KeeperFacts,
    pub store: Store,
    /// The postgres we started; `None` when stopped.
    pub pg: Option<PgProcess>,
    /// The config last written into PGDATA by this process.
    pub applied: Option<DesiredConfig>,
    pub keeper_state: KeeperState,
    pub timing: Timing,
    pub shared: Arc<Shared>,
    /// Kills a master's PostgreSQL that outlives its publications or its keeper.
    pub fence: Arc<Fence>,
    pub local_conn: LocalConn,
    /// Last plan outcome, to log a wait or an error once rather than every iteration.
    last_end: Option<PlanEnd>,
    /// systemd: pings, status and start-timeout extensions during an iteration.
    pub work: Arc<Work>,
    /// How the last iteration ended (status line and readiness).
    outcome: Outcome,
    /// Our db in the last cluster data read.
    assigned: Option<AssignedDb>,
    /// The last cluster data read says the cluster is initializing.
    cluster_initializing: bool,
    /// READY=1 was sent.
    ready: bool,
    /// When the running postgres was started and up: only a state gathered after that says
    /// whether it accepts connections.
    pub pg_started_at: Option<Instant>,
    /// Recent crashes and failed resyncs: what the plan must hold back (`setbacks`).
    pub setbacks: super::setbacks::Setbacks,
    /// Iterations left to run [`QUICK_LOOK`] apart rather than sleepInterval.
    quick_looks: u32,
    /// The status line, for readers inside the process (`RoleContext::status`).
    status: tokio::sync::watch::Sender<String>,
    /// What /metrics shows (src/metrics/keeper.rs).
    pub metrics: KeeperMetrics,
}

/// Runs the keeper until `ctx.shutdown`; then stops PostgreSQL (fast) and returns `Ok`. Tells
/// systemd through `ctx.notifier`: READY=1 once the keeper info is published and, if the
/// keeper has a db, that db converged and its PostgreSQL accepts connections; STATUS= (and
/// `ctx.status`) with the keeper's state; WATCHDOG=1 from the loop; EXTEND_TIMEOUT_USEC during
/// initdb, pg_basebackup and PostgreSQL start-up before READY=1 and while stopping; STOPPING=1
/// when `shutdown` fires.
pub async fn run(cfg: KeeperConfig, ctx: RoleContext) -> Result<(), KeeperError> {
    let RoleContext {
        shutdown,
        notifier,
        store: store_cfg,
        status,
        metrics: registry,
        ..
    } = ctx;
    let metrics = registry.keeper(&store_cfg.cluster_name);
    refuse_root()?;
    validate_auth(&cfg)?;
    super::validate::warn_trust(&cfg);
    let advertise_address = cfg
        .pg_advertise_address
        .clone()
        .unwrap_or_else(|| cfg.pg_listen_address.clone());
    warn_advertise_address(&advertise_address);
    let advertise_port = cfg.pg_advertise_port.unwrap_or(cfg.pg_port);

    let dir = DataDir::create(&cfg.data_dir)?;
    let _lock = lock_data_dir(&dir, cfg.disable_data_dir_locking)?;
    let keeper_state = resolve_uid(&dir, cfg.uid.as_ref())?;
    let uid = keeper_state.uid.clone();
    crate::telemetry::set_keeper_uid(uid.as_str());
    tracing::info!(keeper = %uid, "keeper uid");

    let bins = PgBinaries::locate(cfg.pg_bin_path.as_deref())?;
    let (version, pg_major) = match bins.supported_version() {
        Ok(v) => (v, Some(v.maj)),
        Err(e @ PgError::UnsupportedVersion { .. }) => return Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot get the postgres binary version; reporting 0.0 and restarting standbys to follow a new master");
            (Default::default(), None)
        }
    };

    let server_parameters = bins.server_parameters().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot list the server's parameters (postgres --describe-config); pgParameters are written unchecked");
        ServerParameters::default()
    });

    notifier.status("starting: connecting to the store");
    let work = Work::new(notifier.clone());
    let store = Store::connect(&store_cfg).await?;
    registry.watch_store(&store);
    // Learn the spec timings before the first info put takes the lease.
    let timing = initial_timing(&store).await;
    store.set_lease_ttl(timing.sleep_interval.max(MIN_LEASE_TTL));
    super::uid_guard::ensure_uid_free(&store, &uid, timing.sleep_interval, dir.root()).await?;
    // The guard is this very program, started with the guard argument (see fence.rs).
    let fence = Fence::start(Some(Path::new(GUARD_PROGRAM)), timing.fence_after());
    notifier.set_watchdog_period(timing.fence.watchdog);

    let pgdata = dir.pgdata();
    // The keeper always starts postgres itself, as its child: one left by a crashed keeper
    // would run with a config nobody checked against the cluster data.
    work.step(None, STOP_ALLOWANCE);
    supervise(&work, stop_stale_instance(&pgdata, SHUTDOWN_STOP)).await?;
    postgres::remove_stale_secrets(&pgdata)?;

    let boot_uuid = uuid::Uuid::new_v4().to_string();
    let local_conn = LocalConn {
        socket_dir: socket_dir(&cfg, &dir)?,
        port: cfg.pg_port,
        user: cfg.pg_su_username.clone(),
        password: cfg.pg_su_password.clone(),
        timeout: timing.request_timeout,
    };
    let db_state = dir.load_db_state()?;
    journal_db_uid(&db_state.uid);
    let shared = Shared::new(
        Snapshot {
            cluster_uid: keeper_state.cluster_uid.clone(),
            db_uid: db_state.uid,
            generation: db_state.generation,
            running: false,
            stopped_x_log_pos: db_state.switchover_stop_x_log_pos,
            publish_every: timing.fence.publish_every,
            request_timeout: timing.request_timeout,
        },
        metrics.health(),
    );
    let identity = Identity {
        uid: uid.clone(),
        boot_uuid: boot_uuid.clone(),
        version,
        advertise_address,
        advertise_port: advertise_port.to_string(),
        can_be_master: cfg.can_be_master,
        priority: cfg.priority,
        can_be_synchronous_replica: cfg.can_be_synchronous_replica,
        pgdata: pgdata.clone(),
        conn: local_conn.clone(),
    };
    let publisher_stop = shutdown.child_token();
    let publisher = tokio::spawn(publish::publisher(
        store.clone(),
        shared.clone(),
        fence.clone(),
        identity,
        publisher_stop.clone(),
    ));

    let mut keeper = Keeper {
        cfg,
        dir,
        pgdata: Pgdata::new(pgdata),
        bins,
        pg_major,
        server_parameters,
        facts: KeeperFacts { uid, boot_uuid },
        store,
        pg: None,
        applied: None,
        keeper_state,
        timing,
        shared,
        fence: fence.clone(),
        local_conn,
        last_end: None,
        work: work.clone(),
        outcome: Outcome::Starting,
        assigned: None,
        cluster_initializing: true,
        ready: false,
        pg_started_at: None,
        setbacks: Default::default(),
        quick_looks: 0,
        status,
        metrics,
    };
    keeper.main_loop(&shutdown).await;
    keeper.shut_down(&notifier, publisher_stop, publisher).await
}

/// Where PostgreSQL's unix socket and its lock file go: `--pg-socket-dir`, or a directory of
/// the keeper's own (0700) so that no other local user can plant a `.s.PGSQL.<port>.lock` there
/// and stop PostgreSQL from starting, as in a shared /tmp.
fn socket_dir(cfg: &KeeperConfig, dir: &DataDir) -> Result<PathBuf, KeeperError> {
    let socket_dir = match &cfg.pg_socket_dir {
        Some(d) => d.clone(),
        None => {
            let d = dir.root().join("socket");
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(|e| KeeperError::DataDir {
                    path: d.clone(),
                    reason: format!("cannot create the socket directory: {e}"),
                })?;
            d
        }
    };
    // The kernel's limit for a unix socket path (sun_path) is 107 bytes.
    let socket = socket_dir.join(format!(".s.PGSQL.{}", cfg.pg_port));
    if socket.as_os_str().len() > 107 {
        return Err(KeeperError::Config(format!(
            "PostgreSQL's socket {} would be longer than the 107 bytes a unix socket path may have; \
             give a shorter --pg-socket-dir",
            socket.display()
        )));
    }
    Ok(socket_dir)
}

fn lock_data_dir(
    dir: &DataDir,
    disabled: bool,
) -> Result<Option<super::state::DataDirLock>, KeeperError> {
    if disabled {
        return Ok(None);
    }
    let lock = dir.lock()?;
    tracing::info!(data_dir = %dir.root().display(), "exclusive lock on data dir taken");
    Ok(Some(lock))
}

/// The stored spec's timings, or the defaults when there is no clusterdata (yet).
async fn initial_timing(store: &Store) -> Timing {
    if let Ok(Some(cd)) = store.get_cluster_data().await {
        return Timing::from_spec(&cd.value.cluster.spec);
    }
    let mut timing = Timing::from_spec(&ClusterSpec::default());
    timing.sleep_interval = DEFAULT_SLEEP_INTERVAL.to_std();
    timing
}

impl Keeper {
    /// After the main loop: stop publishing, then stop PostgreSQL within the shutdown bound.
    async fn shut_down(
        mut self,
        notifier: &crate::systemd::Notifier,
        publisher_stop: CancellationToken,
        publisher: tokio::task::JoinHandle<()>,
    ) -> Result<(), KeeperError> {
        self.work.set_extending(true);
        self.metrics.shutting_down();
        let stopping = if self.pg.is_some() {
            "stopping: PostgreSQL fast shutdown"
        } else {
            "stopping"
        };
        notifier.stopping(stopping);
        publisher_stop.cancel();
        let _ = publisher.await;
        if self.pg.is_some() {
            self.work
                .step(Some("stopping PostgreSQL…".into()), STOP_ALLOWANCE);
        }
        let work = self.work.clone();
        let stopped = supervise(
            &work,
            self.stop_postgres_within("keeper shutting down", SHUTDOWN_STOP),
        )
        .await;
        if stopped.is_ok() {
            // Left running (the stop failed), the guard still kills it once we are gone.
            self.fence.shutdown();
        }
        stopped
    }
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
            let work = self.work.clone();
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = supervise(&work, self.sync_once()) => outcome,
            };
            self.outcome = outcome;
            if matches!(self.outcome, Outcome::Planned(PlanEnd::Converged { .. })) {
                self.metrics.synced();
            }
            self.metrics.sleep_interval(self.timing.sleep_interval);
            self.shared.publish_now();
            work.notifier().watchdog();
            self.report();
            if self.outcome == Outcome::Planned(PlanEnd::Replan) && replans < MAX_REPLANS {
                replans += 1;
                continue;
            }
            replans = 0;

            let failed = matches!(self.outcome, Outcome::ActionFailed(_));
            let pause = if self.quick_looks > 0 {
                self.quick_looks -= 1;
                self.timing.sleep_interval.min(QUICK_LOOK)
            } else {
                self.timing.sleep_interval
            };
            let deadline = Instant::now() + pause;
            let fence_check = self.fence_deadline();
            // The watchdog wants a sign of life more often than a long sleepInterval gives.
            let ping_every = work.notifier().watchdog_interval();
            let mut ping_at = ping_every.map(|every| Instant::now() + every);
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    _ = sleep_until_opt(ping_at) => {
                        work.notifier().watchdog();
                        ping_at = ping_every.map(|every| Instant::now() + every);
                        continue;
                    }
                    // Readiness and the status line follow what the publisher learns.
                    _ = self.shared.wait_published() => {
                        self.report();
                        continue;
                    }
                    ev = next_event(&mut watch) => match ev {
                        // Fast failover: act on the sentinel's decision at once. Not right
                        // after a failed action: each try publishes, the sentinel writes, and
                        // the write woke the next try at once (a start PostgreSQL kept
                        // refusing was tried every 60 ms in vm-tests' crash_master).
                        Some(StoreEvent::ClusterData) if !failed => break,
                        Some(_) => continue,
                        None => {
                            watch = None;
                            break;
                        }
                    },
                    why = pg_exited(&mut self.pg) => {
                        tracing::error!(keeper = %self.facts.uid, "postgres exited unexpectedly: {why}");
                        if let Some(pid) = self.pg.as_ref().map(|p| p.pid()) {
                            self.note_postgres_exit(pid);
                        }
                        self.pg = None;
                        self.track_postgres();
                        self.shared.update(|s| s.running = false);
                        self.report();
                        break;
                    }
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = sleep_until_opt(fence_check) => break,
                }
            }
        }
    }

    /// When a running master's fence deadline expires: the loop then looks again, so its
    /// state follows what the fence did.
    fn fence_deadline(&mut self) -> Option<Instant> {
        self.track_postgres();
        self.fence.deadline_in().map(|d| Instant::now() + d)
    }

    /// Tells the fence which postmaster runs, and whether as master.
    pub(super) fn track_postgres(&mut self) {
        let pg = match self.pg.as_mut() {
            Some(p) => p
                .is_running()
                .then(|| (p.pid() as i32, p.pgdata().to_path_buf())),
            None => None,
        };
        let master = postgres::local_role(&self.pgdata) == postgres::LocalRole::Master;
        self.fence.watch_postgres(pg, master);
    }

    /// No publication reached the store for longer than a master may run without one (or
    /// our lease, and with it our info, is gone as long).
    fn fenced(&self) -> bool {
        let limit = self.timing.fence_after();
        let lost_lease = self
            .store
            .lease_lost_since()
            .is_some_and(|t| t.elapsed() > limit);
        lost_lease || self.fence.expired()
    }

    /// One observe-plan-execute pass, each step announced to [`Work`] with how long it may
    /// take.
    async fn sync_once(&mut self) -> Outcome {
        self.work.step(None, self.store.timeout() + GRACE);
        let (cd, fenced) = match self.read_cluster_data().await {
            Ok(cd) => (cd, false),
            Err(ReadFailure::BadData(e)) => {
                tracing::error!(keeper = %self.facts.uid, error = %e, "unusable cluster data; keeping the current state");
                return Outcome::BadClusterData;
            }
            Err(ReadFailure::Unreachable(e)) => {
                if !self.fenced() {
                    tracing::warn!(keeper = %self.facts.uid, error = %e, "cannot read cluster data; keeping the current state");
                    return Outcome::StoreUnreachable;
                }
                (None, true)
            }
        };
        if !fenced {
            self.assigned = cd.as_ref().and_then(|cd| assigned_db(cd, &self.facts.uid));
            self.cluster_initializing = cd
                .as_ref()
                .is_none_or(|cd| cd.cluster.status.phase == ClusterPhase::Initializing);
        }
        self.work
            .step(None, self.timing.request_timeout * 3 + GRACE);
        let local = match self.observe(cd.as_ref()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(keeper = %self.facts.uid, error = %e, "cannot read the local state");
                return Outcome::LocalStateUnreadable;
            }
        };
        self.metrics.roles(
            metrics_role(local.role),
            self.assigned.as_ref().map(|a| a.role.into()),
        );
        self.metrics.needs_restart(local.pending_restart);
        let p = plan(&self.facts, cd.as_ref(), &local, fenced);
        self.log_end(&p.end);
        if p.actions.iter().any(Action::changes_postgres) {
            self.quick_looks = QUICK_LOOKS;
        }
        for action in &p.actions {
            tracing::debug!(keeper = %self.facts.uid, ?action, "executing");
            self.work
                .step(action_status(action), self.allowance(action));
            if let Err(e) = self.execute(action).await {
                if self.fence.expired() {
                    // The fence killed PostgreSQL under the action (a keeper frozen past its
                    // deadline, then thawed) and said so at ERROR already.
                    tracing::warn!(keeper = %self.facts.uid, action = action.name(), error = %e, "action failed while fenced; retrying on the next iteration");
                } else {
                    tracing::error!(keeper = %self.facts.uid, action = action.name(), error = %e, "action failed; retrying on the next iteration");
                }
                self.after_action();
                // A failure is retried after a sleepInterval, not at the quick looks' pace
                // that a start sets: a start that keeps failing (a parameter PostgreSQL
                // refuses) was retried five times a second, an ERROR each time.
                self.quick_looks = 0;
                return Outcome::ActionFailed(action.name());
            }
            self.after_action();
        }
        Outcome::Planned(p.end)
    }

    /// How long an action may take before the watchdog pings stop (unless it reports
    /// progress): the bounds it has itself, plus a margin.
    fn allowance(&self, action: &Action) -> Duration {
        let t = &self.timing;
        let stop = t.loop_stop() + GRACE;
        // A start first stops a stray instance.
        let start = stop + t.db_wait_ready_timeout * 2 + GRACE;
        match action {
            Action::Stop(_) => stop,
            Action::InitDb(_) => INITDB_ALLOWANCE,
            Action::StartTemporary(_) | Action::Start => start,
            Action::Restart => stop + start,
            Action::Promote => t.db_wait_ready_timeout + GRACE,
            Action::Resync { .. } => BASEBACKUP_STALL,
            Action::Restore { .. } => t.init_timeout + GRACE,
            Action::ArchiveRecovery { .. } => start + t.sync_timeout,
            _ => t.request_timeout * 4 + GRACE,
        }
    }

    /// Sends the status line, and READY=1 the first time the keeper is ready.
    fn report(&mut self) {
        let running = self.pg.as_mut().is_some_and(|p| p.is_running());
        let published = self.shared.published();
        let health = published
            .as_ref()
            .filter(|p| {
                running
                    && self.pg_started_at.is_some_and(|t| p.gathered_at >= t)
                    && self.assigned.as_ref().is_some_and(|a| a.uid == p.db_uid)
            })
            .map(|p| PgHealth {
                accepting: p.healthy,
                streaming_standbys: p.streaming_standbys,
                replay_lag: p.replay_lag,
            });
        let line = status_line(&StatusFacts {
            outcome: &self.outcome,
            db: self.assigned.as_ref(),
            running,
            health,
            store_silent_for: self.fence.silent_for().unwrap_or_default(),
        });
        let notifier = self.work.notifier();
        let facts = ReadyFacts {
            published: published.is_some(),
            cluster_initializing: self.cluster_initializing,
            running,
            accepting: health.is_some_and(|h| h.accepting),
        };
        if !self.ready && is_ready(&self.outcome, facts) {
            self.ready = true;
            self.work.set_extending(false);
            tracing::info!(keeper = %self.facts.uid, status = %line, "keeper ready");
            notifier.ready(&line);
        } else {
            notifier.status(&line);
        }
        crate::role::publish_status(&self.status, &line);
    }

    fn after_action(&mut self) {
        self.track_postgres();
        let running = self.pg.as_mut().is_some_and(|p| p.is_running());
        let db_state = self.dir.load_db_state().unwrap_or_default();
        if self.shared.snapshot().db_uid != db_state.uid {
            journal_db_uid(&db_state.uid);
        }
        self.shared.update(|s| {
            s.running = running;
            s.db_uid = db_state.uid;
            s.generation = db_state.generation;
            s.stopped_x_log_pos = db_state.switchover_stop_x_log_pos;
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
                let cd = v.map(|v| v.value);
                if let Some(cd) = &cd {
                    self.adopt(cd).map_err(ReadFailure::BadData)?;
                    self.metrics.valid_clusterdata(cd, &self.facts.uid);
                }
                Ok(cd)
            }
            Err(e @ StoreError::BadValue { .. }) => Err(ReadFailure::BadData(e.into())),
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
        // During a planned switchover the sentinel waits on what keepers report (the old
        // master's stop, the target's WAL position): reports go out often then, so the
        // switchover is not paced by sleepInterval.
        let switching = cd
            .cluster
            .status
            .switchover
            .as_ref()
            .is_some_and(|s| s.stage.before_promotion());
        let publish_every = if switching {
            timing.fence.publish_every.min(SWITCHOVER_PUBLISH_EVERY)
        } else {
            timing.fence.publish_every
        };
        self.shared.update(|s| {
            s.cluster_uid = cluster_uid;
            s.publish_every = publish_every;
            s.request_timeout = timing.request_timeout;
        });
        self.fence.set_fence_after(timing.fence_after());
        self.work
            .notifier()
            .set_watchdog_period(timing.fence.watchdog);
        Ok(())
    }

    async fn observe(&mut self, cd: Option<&ClusterData>) -> Result<LocalState, KeeperError> {
        let mut db_state = self.dir.load_db_state()?;
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
            self.note_postgres_exit(gone.pid());
        }
        if db_state.rewound && running && role == LocalRole::Standby {
            self.settle_rewind(&mut db_state).await?;
        }
        let mut in_sync_standbys = None;
        let mut pending_restart = false;
        // Only ask postgres what the plan (or a metrics endpoint: stolon_keeper_needs_restart)
        // can use: the keeper connects on every iteration otherwise, which is noise in the
        // server log.
        let want_pending =
            self.metrics.served() || cd.is_some_and(|cd| cd.cluster.spec.automatic_pg_restart());
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
                    client.close().await;
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
            pg_major: self.pg_major,
            holds: self.setbacks.holds(std::time::Instant::now()),
        })
    }

    /// Clears dbstate's `rewound` once the rewound standby gets WAL from the db it follows: the
    /// rewind worked, and a later resync may rewind again.
    async fn settle_rewind(&mut self, db_state: &mut DbState) -> Result<(), KeeperError> {
        let received = match PgClient::connect(&self.local_conn).await {
            Ok(client) => {
                let received = client.received_wal().await;
                client.close().await;
                received
            }
            Err(e) => Err(e),
        };
        match received {
            Ok(true) => {
                tracing::info!(keeper = %self.facts.uid, db = %db_state.uid, "the rewound standby streams from the db it follows");
                db_state.rewound = false;
                self.dir.save_db_state(db_state)
            }
            Ok(false) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask postgres whether WAL arrives");
                Ok(())
            }
        }
    }

    fn log_end(&mut self, end: &PlanEnd) {
        let uid = &self.facts.uid;
        if self.last_end.as_ref() != Some(end) {
            match end {
                PlanEnd::Converged { db_uid, generation } => {
                    tracing::info!(keeper = %uid, db = %db_uid, generation = generation.get(), "db converged")
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

    /// Stops postgres within [`Timing::loop_stop`].
    pub(super) async fn stop_postgres(&mut self, why: &str) -> Result<(), KeeperError> {
        self.stop_postgres_within(why, self.timing.loop_stop())
            .await
    }

    async fn stop_postgres_within(
        &mut self,
        why: &str,
        total: Duration,
    ) -> Result<(), KeeperError> {
        if let Some(pg) = self.pg.take() {
            tracing::info!(keeper = %self.facts.uid, "stopping postgres: {why}");
            // A fast shutdown refuses new writes at once; the deadline no longer matters.
            self.fence.disarm();
            let stopped = pg.stop_fast(total).await;
            self.track_postgres();
            stopped?;
        }
        self.shared.update(|s| s.running = false);
        Ok(())
    }

    /// Fencing: an immediate shutdown, then SIGKILL, so not one more write is acknowledged.
    pub(super) async fn stop_postgres_immediately(&mut self) -> Result<(), KeeperError> {
        if let Some(pg) = self.pg.take() {
            let stopped = pg.stop_immediate(IMMEDIATE_GRACE).await;
            self.track_postgres();
            stopped?;
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
        WaitReason::RoleUndefined => {
            "our db has no role (a deposed master, or not yet assigned): PostgreSQL stays stopped"
                .into()
        }
        WaitReason::FollowedDbAddressUnknown(db) => {
            format!("followed db {db} has not published its address yet")
        }
        WaitReason::Held(hold) => hold.to_string(),
    }
}

/// Upstream's `role` label: an uninitialized PGDATA is `undefined`.
fn metrics_role(role: LocalRole) -> PgRole {
    match role {
        LocalRole::None => PgRole::Undefined,
        LocalRole::Master => PgRole::Master,
        LocalRole::Standby => PgRole::Standby,
    }
}

/// The journal's DB_UID field follows the db in PGDATA (none before the first one).
fn journal_db_uid(uid: &DbUid) {
    crate::telemetry::set_db_uid(Some(uid.as_str()).filter(|u| !u.is_empty()));
}

/// Our db in `cd`, with whom it follows.
fn assigned_db(cd: &ClusterData, keeper_uid: &KeeperUid) -> Option<AssignedDb> {
    let db = cd.db_of_keeper(keeper_uid)?;
    let following = match db.spec.role {
        DbRole::Standby => db
            .spec
            .follow_config
            .as_ref()
            .map(|fc| match fc.follow_type {
                FollowType::External => Followed::External,
                FollowType::Internal => Followed::Keeper {
                    keeper: cd.dbs.get(&fc.db_uid).map(|d| d.spec.keeper_uid.clone()),
                    db: fc.db_uid.clone(),
                },
            }),
        _ => None,
    };
    Some(AssignedDb {
        uid: db.uid.clone(),
        role: db.spec.role,
        following,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_stops_are_bounded_by_the_start_timeout_and_30s() {
        let timing = |ready: u64| Timing {
            sleep_interval: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            db_wait_ready_timeout: Duration::from_secs(ready),
            sync_timeout: Duration::from_secs(30),
            init_timeout: Duration::from_secs(300),
            fence: FenceTiming::new(Duration::from_secs(5), Duration::from_secs(20)),
        };
        let s = Duration::from_secs;
        assert_eq!(timing(60).loop_stop(), s(30));
        assert_eq!(timing(12).loop_stop(), s(12));
        assert_eq!(timing(1).loop_stop(), s(5));
    }
}
