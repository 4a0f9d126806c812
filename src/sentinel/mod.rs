//! The sentinel: watches keepers and proxies and, while leader, computes the cluster view.
//! `decide` is the pure decision; this module is the thin I/O loop around it:
//! read, decide, compare-and-swap as leader, log, sleep until the next reason to look again.

mod decide;
mod elect;
mod events;
mod health;
mod init;
mod leadership;
mod memory;
mod normal;
mod switchover;
mod sync;

pub use decide::{Decision, Observed, decide};
pub use events::{Event, MasterFailure, RemovalReason, Severity};
pub use memory::{ConvergenceTimer, DbMemory, InfoSeen, Memory};
pub use sync::FAKE_STANDBY_NAME;

use crate::cluster::{
    ClusterData, ClusterSpec, DEFAULT_SLEEP_INTERVAL, GoDuration, SentinelInfo, Time, new_uid,
};
use crate::metrics::SentinelMetrics;
use crate::role::RoleContext;
use crate::store::{CasOutcome, Election, Store, StoreError, StoreEvent};
use chrono::Utc;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct SentinelConfig {
    /// `--initial-cluster-spec`: JSON spec file used only when no clusterdata exists.
    pub initial_cluster_spec: Option<PathBuf>,
}

impl SentinelConfig {
    pub fn from_loaded(
        l: &crate::config::Loaded,
    ) -> Result<SentinelConfig, crate::config::ConfigError> {
        let flag = &crate::config::flags::INITIAL_CLUSTER_SPEC;
        let initial_cluster_spec = l.path(flag);
        // Checked at start, as upstream: a broken file should stop the sentinel now, not
        // when the cluster first needs initialising.
        if let Some(path) = &initial_cluster_spec {
            load_initial_spec(path).map_err(|e| {
                let reason = match e {
                    SentinelError::InitialSpec { path, reason } => {
                        format!("{}: {reason}", path.display())
                    }
                    other => other.to_string(),
                };
                crate::config::invalid(flag.name, reason)
            })?;
        }
        Ok(SentinelConfig {
            initial_cluster_spec,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    #[error("--initial-cluster-spec {path}: {reason}")]
    InitialSpec { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Events arriving within this window after a first one are handled by the same check: a
/// clusterdata write wakes every keeper and proxy, whose publishes would otherwise each cause
/// a check of their own.
const COALESCE: Duration = Duration::from_millis(20);
/// Re-check soon, not at once, after a lost compare-and-swap: never a hot loop.
const RETRY_AFTER_CONFLICT: chrono::TimeDelta = chrono::TimeDelta::milliseconds(100);

/// The shortest TTL of a sentinel's lease (and so of its leadership after it died), and the
/// shortest etcd grants with its default election timeout. Keep-alive goes out every third of
/// it; a leader too busy to renew it for a second steps down, which costs nothing since
/// followers keep the same memory (src/sentinel/memory.rs).
const LEADER_MIN_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and validates `--initial-cluster-spec` (a bad file is fatal at start, as upstream).
pub fn load_initial_spec(path: &Path) -> Result<ClusterSpec, SentinelError> {
    let err = |reason: String| SentinelError::InitialSpec {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let spec = crate::cluster::parse_spec_input(&text).map_err(|e| err(e.to_string()))?;
    spec.check_input().map_err(|e| err(e.to_string()))?;
    Ok(spec)
}

/// Runs a sentinel until `ctx.shutdown`: publishes its info, campaigns for leadership, and
/// while leader runs a check every sleepInterval, on every store watch event and when a fail
/// timer expires. Tells systemd (READY, STATUS, WATCHDOG) when started by it, and `ctx.status`
/// the same status line.
pub async fn run(cfg: SentinelConfig, ctx: RoleContext) -> Result<(), SentinelError> {
    let RoleContext {
        shutdown,
        notifier,
        store: store_cfg,
        status,
        metrics: registry,
        ..
    } = ctx;
    let metrics = registry.sentinel(&store_cfg.cluster_name);
    let initial_spec = cfg
        .initial_cluster_spec
        .as_deref()
        .map(load_initial_spec)
        .transpose()?;
    let uid = new_uid();
    let cluster = store_cfg.cluster_name.clone();
    tracing::info!(sentinel = %uid, cluster = %cluster, "sentinel starting");

    let store = Store::connect(&store_cfg).await?;
    registry.watch_store(&store);
    // The lease also holds the leader key: a crashed leader gives way after this TTL, and the
    // failover waits for that. Two sleepIntervals of the stored spec (read before the lease is
    // granted: a granted lease keeps its TTL), at least LEADER_MIN_TTL.
    store.set_min_lease_ttl(LEADER_MIN_TTL);
    let sleep = match store.get_cluster_data().await {
        Ok(Some(cd)) => cd.value.cluster.spec.sleep_interval().to_std(),
        _ => DEFAULT_SLEEP_INTERVAL.to_std(),
    };
    store.set_lease_ttl(sleep * 2);
    let election = store.election(&uid);
    let (terms_tx, mut terms) = watch::channel(0u64);
    let campaign = tokio::spawn(leadership::campaign_loop(
        election.clone(),
        terms_tx,
        metrics.clone(),
        shutdown.child_token(),
    ));

    let mut s = Sentinel {
        uid,
        cluster,
        store,
        election,
        initial_spec,
        memory: Memory::default(),
        term: None,
        observed_at: None,
        sleep: DEFAULT_SLEEP_INTERVAL.to_std(),
        next_check_at: None,
        info_published: None,
        last_problem: None,
        conditions: Vec::new(),
        warned_intervals: None,
        store_full_since: None,
        status: "starting".into(),
        clock: Clock::start(),
        metrics,
    };
    notifier.status("sentinel started, waiting for the store");
    let mut watch_rx: Option<mpsc::Receiver<StoreEvent>> = None;

    loop {
        if watch_rx.is_none() {
            watch_rx = s.open_watch().await;
        }
        let term = *terms.borrow_and_update();
        s.check(term).await;
        // Ready means: the store answered and our info is published, so `stolonctl status`
        // already lists this sentinel.
        if s.info_published.is_some() {
            notifier.ready(&s.status);
        } else {
            notifier.status(&s.status);
        }
        crate::role::publish_status(&status, &s.status);
        notifier.watchdog();

        let mut wake = Instant::now() + s.sleep;
        if let Some(at) = s.next_check_at {
            wake = wake.min(s.clock.instant_of(at));
        }
        if let Some(every) = notifier.watchdog_interval() {
            wake = wake.min(Instant::now() + every);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(wake) => {}
            changed = terms.changed() => {
                if changed.is_err() {
                    tracing::error!("sentinel leader campaign task ended; stopping");
                    break;
                }
            }
            relevant = next_relevant_event(&mut watch_rx) => {
                if relevant {
                    tokio::time::sleep(COALESCE).await;
                    drain(&mut watch_rx);
                }
            }
        }
    }

    notifier.stopping("sentinel stopping");
    campaign.abort();
    s.stop().await;
    Ok(())
}

/// Waits for a watch event that may change a decision. Our own sentinel info and the leader
/// keys are not among them: reacting to our own publish would loop. Returns false when the
/// watch ended (it is then reopened).
async fn next_relevant_event(rx: &mut Option<mpsc::Receiver<StoreEvent>>) -> bool {
    let Some(r) = rx.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match r.recv().await {
            None => {
                *rx = None;
                return false;
            }
            Some(StoreEvent::SentinelInfo { .. } | StoreEvent::Leader) => continue,
            Some(_) => return true,
        }
    }
}

fn drain(rx: &mut Option<mpsc::Receiver<StoreEvent>>) {
    if let Some(r) = rx.as_mut() {
        while r.try_recv().is_ok() {}
    }
}

/// Wall time advanced by the monotonic clock from the start. Health compares instants taken
/// from this clock only, so a wall-clock step (NTP, a suspended VM's clock fix-up) cannot make
/// every keeper look silent at once.
struct Clock {
    wall: Time,
    mono: Instant,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Utc::now(),
            mono: Instant::now(),
        }
    }

    fn now(&self) -> Time {
        let elapsed = chrono::TimeDelta::from_std(self.mono.elapsed()).unwrap_or_default();
        self.wall + elapsed
    }

    fn instant_of(&self, at: Time) -> Instant {
        let offset = (at - self.wall).to_std().unwrap_or(Duration::ZERO);
        self.mono + offset
    }
}

struct Sentinel {
    uid: String,
    cluster: String,
    store: Store,
    election: Election,
    initial_spec: Option<ClusterSpec>,
    memory: Memory,
    /// The leadership term of the last check as leader (a new one is logged).
    term: Option<u64>,
    /// When the last check read the store successfully: a gap of failInterval resets `memory`.
    observed_at: Option<Instant>,
    sleep: Duration,
    next_check_at: Option<Time>,
    info_published: Option<Instant>,
    /// The last problem logged, so a condition persisting over many checks is logged once.
    last_problem: Option<String>,
    /// Condition events of the previous check (logged when they appear, not every check).
    conditions: Vec<Event>,
    warned_intervals: Option<(GoDuration, GoDuration)>,
    /// Since when etcd refuses our writes with its NOSPACE alarm (our info publication or a
    /// clusterdata write was refused); `None` again after the next write that gets through.
    /// Meanwhile no keeper or proxy can publish either, so their health is not judged.
    store_full_since: Option<Instant>,
    status: String,
    clock: Clock,
    /// What /metrics shows (src/metrics/sentinel.rs).
    metrics: SentinelMetrics,
}

impl Sentinel {
    async fn open_watch(&self) -> Option<mpsc::Receiver<StoreEvent>> {
        match self.store.watch().await {
            Ok(rx) => Some(rx),
            Err(e) => {
                tracing::warn!(cluster = %self.cluster, error = %e, "cannot watch the store; polling every sleepInterval");
                None
            }
        }
    }

    fn problem(&mut self, msg: String) {
        if self.last_problem.as_ref() != Some(&msg) {
            tracing::error!(cluster = %self.cluster, "{msg}");
            self.last_problem = Some(msg.clone());
        }
        self.status = msg;
    }

    /// One check: read, publish, observe, decide, write. Problems are logged here, where they are handled.
    async fn check(&mut self, term: u64) {
        self.next_check_at = None;
        let cd = match self.store.get_cluster_data().await {
            Ok(Some(cd)) => cd,
            Ok(None) => {
                // Unlike upstream, publish before the cluster exists: the sentinel is up and
                // `stolonctl status` should say so (and systemd hears READY).
                match self.publish_info().await {
                    Ok(true) => self.store_writable(),
                    Ok(false) => {}
                    Err(e) => return self.problem(format!("cannot publish sentinel info: {e}")),
                }
                return self.no_cluster_data().await;
            }
            Err(e) => return self.problem(format!("cannot read clusterdata: {e}")),
        };
        let spec = &cd.value.cluster.spec;
        self.sleep = spec.sleep_interval().to_std();
        // The lease holds the leader key: a crashed leader gives way once it expires. A lease
        // granted before the spec was readable (a sentinel started before the cluster was
        // initialised) has the default sleepInterval's TTL, 10 s, which a host crash then
        // waits for: replace it. Replacing drops our candidacy (or leadership) and we stand
        // again at once; the followers' memory makes a leadership change cost nothing.
        if let Err(e) = self.store.change_lease_ttl(self.sleep * 2).await {
            tracing::warn!(cluster = %self.cluster, error = %e, "cannot replace the store lease to follow sleepInterval; retrying at the next check");
        }
        let intervals = (spec.fail_interval(), spec.sleep_interval());
        if self.warned_intervals != Some(intervals)
            && let Err(e) = spec.check_fence_timing()
        {
            tracing::warn!(
                cluster = %self.cluster,
                fail_interval = %intervals.0,
                sleep_interval = %intervals.1,
                "{e}; healthy keepers may be judged failed and masters fence themselves \
                 between publications: raise failInterval (stolonctl update)"
            );
        }
        self.warned_intervals = Some(intervals);

        // The store held full until now counts as full for this check too: the check whose
        // write is the first to get through restarts every health timer once more, so aging
        // starts from the moment the store is writable again.
        let was_full = self.store_full_since.is_some();
        match self.publish_info().await {
            Ok(true) => self.store_writable(),
            Ok(false) => {}
            Err(e) if e.is_no_space() => self.store_full(&e),
            Err(e) => return self.problem(format!("cannot publish sentinel info: {e}")),
        }
        let store_full = was_full || self.store_full_since.is_some();
        let mut observed = match self.observe().await {
            Ok(o) => o,
            Err(e) => return self.problem(format!("cannot read keeper/proxy infos: {e}")),
        };
        observed.store_full = store_full;
        // A memory with a hole of failInterval or more cannot tell a keeper that went silent
        // from one that could not publish either: decide gives everyone a grace.
        let fail = spec.fail_interval().to_std();
        observed.blind_for = self
            .observed_at
            .map(|at| at.elapsed())
            .filter(|blind| *blind >= fail)
            .and_then(|blind| chrono::TimeDelta::from_std(blind).ok());
        self.observed_at = Some(Instant::now());
        let now = self.clock.now();
        let leading = self.election.is_leader();
        let decision = decide(&cd.value, &observed, &self.memory, now, &mut new_uid);
        if !leading {
            // Followers judge health as the leader does and keep only what they remember, so
            // one that takes over knows how long each keeper has been silent instead of
            // waiting failInterval with an empty memory (src/sentinel/memory.rs). Timers of
            // generations follow the stored clusterdata, not the decision left unwritten.
            let mut memory = decision.memory;
            health::refresh_convergence_timers(&cd.value, &mut memory, now);
            self.memory = memory;
            self.metrics.following();
            self.term = None;
            self.last_problem = None;
            self.conditions.clear();
            self.status = self.with_store_state("following: another sentinel leads".into());
            return;
        }
        if self.term != Some(term) {
            self.term = Some(term);
            tracing::info!(
                cluster = %self.cluster,
                observed_for = ?self.memory.observing_since.map(|t| (now - t).to_std().unwrap_or_default()),
                "leading: judging keeper health from what this sentinel observed"
            );
        }
        self.memory = decision.memory;
        self.next_check_at = decision.next_check_at;
        let mut written = None;
        let mut refused = false;
        if let Some(new) = &decision.cluster_data {
            match self
                .store
                .cas_cluster_data_as_leader(new, cd.mod_revision, &self.election)
                .await
            {
                Ok(CasOutcome::Written { .. }) => {
                    self.store_writable();
                    written = Some(new);
                }
                Ok(CasOutcome::Conflict) => {
                    // Someone else wrote (stolonctl) or we were deposed: the watch event of
                    // that write brings the next check, which decides on fresh data.
                    tracing::info!(cluster = %self.cluster, "clusterdata changed during the check; deciding again");
                    self.next_check_at = Some(self.clock.now() + RETRY_AFTER_CONFLICT);
                }
                // Nothing was written: the stored clusterdata is the one read, and the next
                // checks hold every health timer until a write gets through.
                Err(e) if e.is_no_space() => {
                    self.store_full(&e);
                    refused = true;
                }
                Err(e) => return self.problem(format!("cannot write clusterdata: {e}")),
            }
        }
        if let Some(new) = written {
            self.metrics.standby_lags(new);
            // A master replaced; the first election (none before) is no failover.
            let masters = (&cd.value.cluster.status.master, &new.cluster.status.master);
            if matches!(masters, (Some(old), Some(now)) if old != now) {
                self.metrics.failover();
            }
        } else if decision.cluster_data.is_none() {
            self.metrics.standby_lags(&cd.value);
        }
        // A check whose decision is stored (or that had nothing to write) succeeded; a
        // refused or conflicting write leaves the decision to the next check.
        if written.is_some() || decision.cluster_data.is_none() {
            self.metrics.check_succeeded();
        }
        if refused {
            // A decision etcd refused did not happen: its events (a failover judged just
            // before the sentinel learnt that the store is full, say) are not news.
            for e in &decision.events {
                tracing::debug!(cluster = %self.cluster, "not written, store full: {e}");
            }
        } else {
            let mut conditions = Vec::new();
            for e in &decision.events {
                if e.is_condition() {
                    conditions.push(e.clone());
                    if self.conditions.contains(e) {
                        continue;
                    }
                }
                log_event(&self.cluster, e);
            }
            self.conditions = conditions;
        }
        self.last_problem = None;
        let status = leader_status(written.unwrap_or(&cd.value));
        self.status = self.with_store_state(status);
    }

    /// A write was refused with etcd's NOSPACE alarm: logged once, until a write gets through.
    fn store_full(&mut self, e: &StoreError) {
        if self.store_full_since.is_none() {
            tracing::warn!(
                cluster = %self.cluster,
                error = %e,
                "store full (NOSPACE): not judging keeper or proxy health until etcd accepts \
                 writes again; clear it with etcdctl alarm disarm after compaction/defrag"
            );
            self.store_full_since = Some(Instant::now());
        }
    }

    /// A write got through: if the store was full, health is judged again from now on.
    fn store_writable(&mut self) {
        if let Some(since) = self.store_full_since.take() {
            tracing::info!(
                cluster = %self.cluster,
                full_for = ?since.elapsed(),
                "store writable again: judging keeper and proxy health from now on, each \
                 keeper has failInterval and each proxy its window to publish"
            );
        }
    }

    fn with_store_state(&self, status: String) -> String {
        if self.store_full_since.is_some() {
            format!("store full (NOSPACE), keeper and proxy health not judged; {status}")
        } else {
            status
        }
    }

    /// Publishes the sentinel info at most once per sleepInterval (its TTL is twice that).
    /// Returns whether it wrote.
    async fn publish_info(&mut self) -> Result<bool, StoreError> {
        if self
            .info_published
            .is_some_and(|t| t.elapsed() < self.sleep)
        {
            return Ok(false);
        }
        let info = SentinelInfo {
            uid: self.uid.clone(),
        };
        self.store.put_sentinel_info(&info).await?;
        self.info_published = Some(Instant::now());
        Ok(true)
    }

    async fn observe(&self) -> Result<Observed, StoreError> {
        Ok(Observed {
            keepers: self.store.get_keepers_info().await?,
            proxies: self.store.get_proxies_info().await?,
            store_full: false,
            blind_for: None,
        })
    }

    /// No clusterdata: create it from --initial-cluster-spec (any sentinel may; create-only, so
    /// exactly one wins), else wait for `stolonctl init`.
    async fn no_cluster_data(&mut self) {
        let Some(spec) = self.initial_spec.clone() else {
            self.status = "no clusterdata: waiting for stolonctl init".into();
            if self.last_problem.as_deref() != Some("no clusterdata") {
                tracing::info!(cluster = %self.cluster, "no cluster data available, waiting for it to appear");
                self.last_problem = Some("no clusterdata".into());
            }
            return;
        };
        let cd = ClusterData::new(new_uid(), spec, self.clock.now());
        match self.store.cas_cluster_data(&cd, 0).await {
            Ok(CasOutcome::Written { .. }) => tracing::info!(
                cluster = %self.cluster,
                cluster_uid = %cd.cluster.uid,
                "wrote initial clusterdata from --initial-cluster-spec"
            ),
            Ok(CasOutcome::Conflict) => {}
            Err(e) => return self.problem(format!("cannot write initial clusterdata: {e}")),
        }
        self.next_check_at = Some(self.clock.now() + RETRY_AFTER_CONFLICT);
    }

    async fn stop(&self) {
        if self.election.is_leader()
            && let Err(e) = self.election.resign().await
        {
            tracing::warn!(cluster = %self.cluster, error = %e, "cannot resign sentinel leadership; it expires with the lease");
        }
        if let Err(e) = self.store.revoke_lease().await {
            tracing::warn!(cluster = %self.cluster, error = %e, "cannot revoke the store lease; the sentinel info expires with it");
        }
        tracing::info!(cluster = %self.cluster, sentinel = %self.uid, "sentinel stopped");
    }
}

fn leader_status(cd: &ClusterData) -> String {
    let healthy = cd.keepers.values().filter(|k| k.status.healthy).count();
    let master = match cd.master_db() {
        Some(db) => format!("master db {} on keeper {}", db.uid, db.spec.keeper_uid),
        None => "no master yet".into(),
    };
    format!(
        "leader: {:?}, {master}, {healthy}/{} keepers healthy",
        cd.cluster.status.phase,
        cd.keepers.len()
    )
}

fn log_event(cluster: &str, e: &Event) {
    let keeper = e.keeper().unwrap_or("-");
    let db = e.db().unwrap_or("-");
    match e.severity() {
        Severity::Debug => tracing::debug!(cluster, keeper, db, "{e}"),
        Severity::Info => tracing::info!(cluster, keeper, db, "{e}"),
        Severity::Warn => tracing::warn!(cluster, keeper, db, "{e}"),
        Severity::Error => tracing::error!(cluster, keeper, db, "{e}"),
    }
}

#[cfg(test)]
mod tests;
