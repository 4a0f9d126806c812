//! The check loop: read clusterdata every proxyCheckInterval and at once on every
//! clusterdata watch event, route accordingly, publish our proxy info; and the watchdog that
//! fails closed when no check succeeded for proxyTimeout.

mod read_only;
mod resolve;
mod wake;

pub(crate) use read_only::ReadOnlySide;

use super::ProxyError;
use super::listen::Listening;
use super::route::{Destination, Router};
use super::store_source::ClusterSource;
use super::target::{NoTarget, Target, select_target};
use crate::cluster::{DEFAULT_PROXY_CHECK_INTERVAL, DEFAULT_PROXY_TIMEOUT, ProxyInfo, new_uid};
use crate::store::{StoreError, StoreEvent};
use crate::systemd::Notifier;
use resolve::resolve;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wake::{Wake, heartbeat, next_event};

#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error("cannot read clusterdata: {0}")]
    Read(StoreError),
    #[error("{0}")]
    Invalid(NoTarget),
    #[error("cannot publish proxy info while a master is defined: {0}")]
    Publish(StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        /// The flags that set `addr`, for the startup error.
        flags: &'static str,
        source: std::io::Error,
    },
}

pub(crate) struct Checker {
    pub uid: String,
    pub router: Router,
    pub listening: Listening,
    pub status: watch::Sender<String>,
    /// Gets the status lines too, READY=1 after the first usable check, WATCHDOG=1 from the
    /// loop, STOPPING=1 at shutdown.
    pub notifier: Arc<Notifier>,
    pub stop_listening: bool,
    /// `--hold-timeout`: new clients wait this long for a master on its way (none: closed at
    /// once).
    hold_timeout: Option<Duration>,
    /// For the bind error message.
    pub listen_on: String,
    check_interval: Duration,
    proxy_timeout: Duration,
    last_ok: Instant,
    timed_out: bool,
    /// Why there is no destination, for the status line.
    reason: NoTarget,
    has_listened: bool,
    last_failure: Option<String>,
    /// Why our info could not be published while the check still succeeded (NOSPACE, or no
    /// master defined), to warn once.
    publish_failing: Option<String>,
    started: Instant,
    /// The last master address resolved (`host:port` as clusterdata has it, and its address), so
    /// a name is looked up once per change, not on every check: a failing or slow lookup must not
    /// cut sessions to a master that still answers.
    resolved: Option<(String, std::net::SocketAddr)>,
    /// The read-only listener and where its clients go; none without one.
    read_only: Option<ReadOnlySide>,
}

impl Checker {
    pub(super) fn new(
        uid: String,
        router: Router,
        listening: Listening,
        status: watch::Sender<String>,
        stop_listening: bool,
        listen_on: String,
        notifier: Arc<Notifier>,
    ) -> Self {
        let has_listened = listening.is_listening();
        let c = Checker {
            uid,
            router,
            listening,
            status,
            notifier,
            stop_listening,
            hold_timeout: None,
            listen_on,
            check_interval: DEFAULT_PROXY_CHECK_INTERVAL.to_std(),
            proxy_timeout: DEFAULT_PROXY_TIMEOUT.to_std(),
            last_ok: Instant::now(),
            timed_out: false,
            reason: NoTarget::Starting,
            has_listened,
            last_failure: None,
            publish_failing: None,
            started: Instant::now(),
            resolved: None,
            read_only: None,
        };
        c.publish_status();
        c
    }

    /// New clients wait up to `hold_timeout` for a master on its way instead of being closed.
    pub(super) fn holding_for(mut self, hold_timeout: Option<Duration>) -> Self {
        self.hold_timeout = hold_timeout;
        self
    }

    /// Serves read-only clients through `side`.
    pub(super) fn with_read_only(mut self, side: Option<ReadOnlySide>) -> Self {
        self.read_only = side;
        self.publish_status();
        self
    }

    fn deadline(&self) -> Instant {
        self.last_ok + self.proxy_timeout
    }

    fn publish_status(&self) {
        let text = match self.router.current() {
            Some(d) => format!("routing to {} (master db {})", d.addr, d.db_uid),
            None if self.listening.is_listening() => match self.hold_timeout {
                Some(t) if self.router.holding() => {
                    format!(
                        "no master: holding new clients up to {t:?} ({})",
                        self.reason
                    )
                }
                _ => format!("no master: refusing connections ({})", self.reason),
            },
            None => format!("no master: not listening ({})", self.reason),
        } + &self.read_only_status();
        self.notifier.status(&text);
        crate::role::publish_status(&self.status, &text);
    }

    async fn route(&mut self, dest: Option<Destination>, reason: NoTarget) {
        self.route_after(dest, reason, Duration::ZERO).await
    }

    /// As `route`, the current sessions getting up to `grace` to end by themselves first.
    async fn route_after(&mut self, dest: Option<Destination>, reason: NoTarget, grace: Duration) {
        let hold = dest.is_none() && self.hold_timeout.is_some() && reason.holds_clients();
        if let Some(d) = &dest {
            if self.router.current().as_deref() != Some(d) {
                tracing::info!(db = %d.db_uid, addr = %d.addr, "routing clients to the master");
            }
        } else if self.router.current().is_some() || self.reason != reason {
            if hold {
                tracing::info!(%reason, hold_timeout = ?self.hold_timeout, "holding new clients for a master");
            } else {
                tracing::info!(%reason, "refusing clients");
            }
        }
        self.reason = reason;
        self.router.switch_after(dest, hold, grace).await;
        self.publish_status();
    }

    async fn fail_closed(&mut self) {
        tracing::error!(
            proxy_timeout = ?self.proxy_timeout,
            "no successful store check within proxyTimeout: closing all sessions{}",
            if self.stop_listening && self.listening.is_owned() { " and the listening socket" } else { "" }
        );
        self.timed_out = true;
        self.route(None, NoTarget::StoreTimeout(self.proxy_timeout))
            .await;
        self.close_read_only().await;
        if self.stop_listening {
            self.listening.close().await;
            self.close_read_only_listener().await;
        }
        // A handed socket cannot be closed; clients that queued since start are closed now.
        self.listening.start_handed();
        self.start_read_only_handed();
        self.publish_status();
    }

    /// Runs until `shutdown`; then stops accepting and closes every session.
    pub(super) async fn run<S: ClusterSource>(
        &mut self,
        source: &S,
        shutdown: &CancellationToken,
    ) -> Result<(), ProxyError> {
        let mut events: Option<mpsc::Receiver<StoreEvent>> = None;
        let mut next_check = Instant::now();
        loop {
            self.notifier.watchdog();
            if events.is_none() {
                events = match self.store_call(source.watch(), shutdown).await {
                    None => break,
                    Some(Ok(rx)) => Some(rx),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "cannot watch the store; polling only");
                        None
                    }
                };
            }
            let wake = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(self.deadline()), if !self.timed_out => {
                    self.fail_closed().await;
                    continue;
                }
                ev = next_event(&mut events) => ev,
                _ = tokio::time::sleep_until(next_check) => Wake::Timer,
                // Between checks (proxyCheckInterval, 5 s by default) the loop still comes round
                // often enough for the systemd watchdog, without reading the store.
                _ = heartbeat(&self.notifier) => Wake::Other,
            };
            match wake {
                Wake::Closed => {
                    events = None;
                    continue;
                }
                Wake::Other => continue,
                Wake::ClusterData | Wake::Timer => {}
            }
            // A burst of changes needs one read, which sees them all.
            if let Some(rx) = events.as_mut() {
                while rx.try_recv().is_ok() {}
            }
            next_check = Instant::now() + self.check_interval;
            match self.check(source, shutdown).await {
                None => break,
                Some(Ok(())) => {
                    if self.last_failure.take().is_some() {
                        tracing::info!("store checks succeed again");
                    }
                }
                // A proxy that cannot take its port at start is misconfigured: say so and exit
                // instead of retrying silently.
                Some(Err(CheckError::Listen {
                    addr,
                    flags,
                    source,
                })) if !self.has_listened => {
                    return Err(ProxyError::Bind {
                        addr,
                        flags,
                        source,
                    });
                }
                Some(Err(e)) => {
                    let msg = e.to_string();
                    if self.last_failure.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(error = %msg, "proxy check failed");
                        self.last_failure = Some(msg);
                    }
                }
            }
        }
        self.notifier
            .stopping("stopping: closing the listening socket and all client sessions");
        self.listening.stop().await;
        self.stop_read_only_listener().await;
        self.route(None, NoTarget::ShuttingDown).await;
        self.close_read_only().await;
        Ok(())
    }

    /// Awaits `fut` while keeping the watchdog armed: a hung store read must not keep sessions
    /// open past proxyTimeout. `None` on shutdown.
    async fn guarded<F: Future>(
        &mut self,
        fut: F,
        shutdown: &CancellationToken,
    ) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                r = &mut fut => return Some(r),
                _ = tokio::time::sleep_until(self.deadline()), if !self.timed_out => {
                    self.fail_closed().await;
                }
                // A store call may take up to proxyTimeout; the loop is alive meanwhile.
                _ = heartbeat(&self.notifier) => self.notifier.watchdog(),
            }
        }
    }

    /// A store call, bounded by proxyTimeout on top of the store's own request timeout: a call
    /// that never returns would otherwise stop all checks for good, fail-closed forever.
    async fn store_call<T>(
        &mut self,
        fut: impl Future<Output = Result<T, StoreError>>,
        shutdown: &CancellationToken,
    ) -> Option<Result<T, StoreError>> {
        let bound = self.proxy_timeout;
        let r = self
            .guarded(tokio::time::timeout(bound, fut), shutdown)
            .await?;
        Some(r.unwrap_or(Err(StoreError::Timeout(bound))))
    }

    /// Whether handed (activated) sockets may start accepting after a successful check. Not
    /// while this new proxy waits for the sentinel to enable it, for up to proxyTimeout after
    /// start: the clients queued meanwhile (the first one started us) are then served instead
    /// of closed. Any other reason for no master will not clear in a moment: accept and close.
    fn may_accept_on_handed(&self) -> bool {
        let waiting_to_be_enabled = self.router.current().is_none()
            && matches!(self.reason, NoTarget::NotEnabled(_))
            && self.started.elapsed() < self.proxy_timeout;
        !waiting_to_be_enabled
    }

    async fn check<S: ClusterSource>(
        &mut self,
        source: &S,
        shutdown: &CancellationToken,
    ) -> Option<Result<(), CheckError>> {
        // The fail-closed timer counts from before this check's publication is sent: the
        // sentinel sees that publication later, so when it has seen none for proxyTimeout this
        // proxy's own timer has run out (the sentinel's window, src/sentinel/health.rs).
        let started = Instant::now();
        let cd = match self.store_call(source.cluster_data(), shutdown).await? {
            Ok(cd) => cd,
            Err(e @ StoreError::BadValue { .. }) => {
                self.route(None, NoTarget::InvalidClusterData(e.to_string()))
                    .await;
                self.close_read_only().await;
                // Unusable clusterdata will not clear in a moment: handed sockets refuse clients.
                self.listening.start_handed();
                self.start_read_only_handed();
                self.publish_status();
                return Some(Err(CheckError::Read(e)));
            }
            // A transient store error keeps the current route; the watchdog bounds how long.
            Err(e) => return Some(Err(CheckError::Read(e))),
        };
        let target = select_target(cd.as_ref(), &self.uid);
        if let Target::None {
            reason: reason @ (NoTarget::UnsupportedFormat(_) | NoTarget::InvalidClusterData(_)),
        } = target
        {
            // Unusable clusterdata counts as a failed check (upstream's rule), and its intervals
            // must not be adopted.
            self.route(None, reason.clone()).await;
            self.close_read_only().await;
            self.listening.start_handed();
            self.start_read_only_handed();
            self.publish_status();
            return Some(Err(CheckError::Invalid(reason)));
        }
        let master_defined = target.master_defined();
        let (dest, reason) = match target {
            Target::None { reason } => (None, reason),
            Target::Master { db_uid, addr } => {
                self.master_destination(db_uid, addr, shutdown).await?
            }
        };
        let readable = self.readable_standbys(cd.as_ref(), shutdown).await?;
        // Two-phase switch: sessions to the old master are closed before we publish the new
        // generation, since the sentinel takes that as our acknowledgement.
        let current = self.router.current();
        if current.is_some() && current.as_deref() != dest.as_ref() {
            let grace = switchover_grace(cd.as_ref(), current.as_deref());
            if !grace.is_zero() {
                tracing::info!(
                    ?grace,
                    "planned switchover: sessions to the master get a moment to finish"
                );
            }
            self.route_after(None, reason.clone(), grace).await;
        }
        // So are read-only sessions to a db that no longer qualifies (a standby being promoted
        // among them), and read-only sessions falling back to a master no longer routed.
        let routed = self.router.current().as_deref().cloned();
        self.route_read_only(readable.clone(), routed).await;
        if let Some(cd) = &cd {
            let spec = &cd.cluster.spec;
            // Never announce less than the timer currently running, so the sentinel waits long
            // enough for us (upstream's rule).
            let announced = self.proxy_timeout.max(spec.proxy_timeout().to_std());
            let info = ProxyInfo {
                info_uid: new_uid(),
                uid: self.uid.clone(),
                generation: cd.proxy.generation,
                proxy_timeout_ns: i64::try_from(announced.as_nanos()).unwrap_or(i64::MAX),
                read_only: self.read_only.is_some(),
            };
            match self
                .store_call(source.publish(&info, announced * 2), shutdown)
                .await?
            {
                Ok(()) => {
                    self.check_interval = spec.proxy_check_interval().to_std();
                    self.proxy_timeout = spec.proxy_timeout().to_std();
                    if self.publish_failing.take().is_some() {
                        tracing::info!("proxy info published again");
                    }
                }
                // ⚠ upstream fails the check on any publish failure while a master is defined.
                // Not on etcd's NOSPACE alarm: the store is read-only for everyone, so no
                // sentinel can change the clusterdata behind our back, and we read it (this
                // check just did, and keeps doing so): following it stays safe. Failing closed
                // would take every proxy, so the whole database, down over a full store.
                Err(e) if master_defined && !e.is_no_space() => {
                    return Some(Err(CheckError::Publish(e)));
                }
                Err(e) => {
                    let msg = e.to_string();
                    if self.publish_failing.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(
                            error = %msg,
                            "cannot publish proxy info; routing as the clusterdata says"
                        );
                        self.publish_failing = Some(msg);
                    }
                }
            }
        }
        self.route(dest.clone(), reason).await;
        self.route_read_only(readable, dest).await;
        // Listening (re)starts only after a whole successful check, not just a read as upstream:
        // a proxy that cannot announce itself to the sentinel should not attract clients either.
        if self.may_accept_on_handed() {
            self.listening.start_handed();
        }
        self.start_read_only_handed();
        if let Err(source) = self.listening.ensure().await {
            return Some(Err(CheckError::Listen {
                addr: self.listen_on.clone(),
                flags: "--listen-address/--port",
                source,
            }));
        }
        if let Err(e) = self.ensure_read_only_listener().await {
            return Some(Err(e));
        }
        if !self.has_listened && self.listening.is_listening() {
            tracing::info!(addr = ?self.listening.local_addr(), "listening");
        }
        self.has_listened |= self.listening.is_listening();
        self.last_ok = started;
        self.timed_out = false;
        self.publish_status();
        // Ready means clients can be served as the cluster wants: our socket is open and we know
        // the clusterdata (a proxy of a cluster not yet initialised is not ready).
        if cd.is_some() && self.listening.is_listening() && !self.notifier.is_ready() {
            self.notifier.ready(self.status.borrow().as_str());
        }
        Some(Ok(()))
    }
}

/// How long sessions under way may finish by themselves when the master is drained for a
/// planned switchover (src/sentinel/switchover.rs): a short transaction completes instead of
/// failing; the old master is stopped only after every proxy confirmed, so nothing more is
/// at stake. A failover (the master failed) cuts at once.
const SWITCHOVER_SESSION_GRACE: Duration = Duration::from_secs(2);

fn switchover_grace(
    cd: Option<&crate::cluster::ClusterData>,
    routed: Option<&Destination>,
) -> Duration {
    let draining = cd
        .and_then(|cd| cd.cluster.status.switchover.as_ref())
        .is_some_and(|sw| {
            sw.stage.before_promotion() && routed.is_some_and(|d| d.db_uid == sw.from_db)
        });
    if draining {
        SWITCHOVER_SESSION_GRACE
    } else {
        Duration::ZERO
    }
}
