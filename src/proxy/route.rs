//! The current destination, shared with the accept loop through a watch channel. Each route has
//! its own cancellation token: switching routes cancels the old token, which ends every session
//! (and every in-flight dial) that started under it. Nothing here is touched per byte.

use crate::cluster::DbUid;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How long a switch waits for the old route's sessions to finish closing. They only have to
/// notice a cancelled token and drop two sockets, so this is a safety bound, not a typical wait.
pub(crate) const SESSION_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub db_uid: DbUid,
    pub addr: SocketAddr,
}

/// What a session holds for its whole life.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub dest: Option<Arc<Destination>>,
    /// Without a destination: whether new clients wait for one (up to `--hold-timeout`) rather
    /// than being closed at once. Only set while the store is read and a master is on its way.
    pub hold: bool,
    pub cancel: CancellationToken,
    /// Never sent on: the switch waits for every clone of this to be dropped, i.e. for every
    /// session of the route to be gone, before it reports the old sessions closed.
    _alive: mpsc::Sender<()>,
}

/// Ends once every session of a route is gone: each session holds a clone of the route, and
/// with it of the sender whose last drop ends this wait.
pub(crate) struct RouteSessions(mpsc::Receiver<()>);

impl RouteSessions {
    /// Waits up to `SESSION_DRAIN_TIMEOUT` for the route's sessions to close; false when some are
    /// still closing then.
    pub(crate) async fn drained(mut self) -> bool {
        self.gone_within(SESSION_DRAIN_TIMEOUT).await
    }

    /// Whether every session of the route is gone within `bound`.
    async fn gone_within(&mut self, bound: Duration) -> bool {
        tokio::time::timeout(bound, self.0.recv()).await.is_ok()
    }
}

impl Route {
    /// A new route to `dest` (none: nowhere, with `hold` saying whether clients wait), with its
    /// own cancellation token, and what tells when its sessions are gone.
    pub(crate) fn new(dest: Option<Destination>, hold: bool) -> (Route, RouteSessions) {
        let (alive_tx, alive_rx) = mpsc::channel(1);
        let route = Route {
            hold: hold && dest.is_none(),
            dest: dest.map(Arc::new),
            cancel: CancellationToken::new(),
            _alive: alive_tx,
        };
        (route, RouteSessions(alive_rx))
    }

    /// How many holders the route has: each of its sessions holds one, and the routers the same
    /// few copies for every route, so it orders routes by their sessions.
    pub(crate) fn holders(&self) -> usize {
        self._alive.strong_count()
    }

    /// Whether a client may be sent on this route now: it has a destination and no switch
    /// away from it has begun.
    pub(crate) fn routable(&self) -> bool {
        self.dest.is_some() && !self.cancel.is_cancelled()
    }
}

pub(crate) struct Router {
    tx: watch::Sender<Route>,
    sessions: RouteSessions,
}

impl Router {
    pub(super) fn new() -> Self {
        let (route, sessions) = Route::new(None, false);
        let (tx, _) = watch::channel(route);
        Router { tx, sessions }
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<Route> {
        self.tx.subscribe()
    }

    pub(super) fn current(&self) -> Option<Arc<Destination>> {
        self.tx.borrow().dest.clone()
    }

    /// Whether new clients are held for a master now.
    pub(super) fn holding(&self) -> bool {
        self.tx.borrow().hold
    }

    /// Makes `dest` the destination of new sessions; without one, `hold` says whether new
    /// clients wait for the next. When `dest` differs from the current one every existing
    /// session is closed, and this returns only once they are gone (or the drain bound passed),
    /// so a caller may then acknowledge the new proxy generation. Returns whether the
    /// destination changed. With a `grace` the old sessions first get that long to end by
    /// themselves (a planned switchover: a transaction under way finishes instead of failing);
    /// new clients take the new route at once meanwhile.
    pub(super) async fn switch_after(
        &mut self,
        dest: Option<Destination>,
        hold: bool,
        grace: Duration,
    ) -> bool {
        let hold = hold && dest.is_none();
        if self.tx.borrow().dest.as_deref() == dest.as_ref() {
            // Only whether clients wait may change, and no session has this route's (absent)
            // destination: held clients see the change and are closed when holding ends.
            self.tx.send_if_modified(|route| {
                let changed = route.hold != hold;
                route.hold = hold;
                changed
            });
            return false;
        }
        let (route, sessions) = Route::new(dest, hold);
        // Held clients wake on this replace and take the new route only if it has a
        // destination: they never see the old one, whose token is cancelled next.
        let old = self.tx.send_replace(route);
        let mut old_sessions = std::mem::replace(&mut self.sessions, sessions);
        let cancel = old.cancel.clone();
        drop(old);
        if !grace.is_zero() && old_sessions.gone_within(grace).await {
            return true;
        }
        // Cancel after the replace: a session that picked up the old route at any moment sees a
        // cancelled token, so none can outlive this switch.
        cancel.cancel();
        if !old_sessions.drained().await {
            tracing::warn!(
                "sessions to the previous master still closing after {SESSION_DRAIN_TIMEOUT:?}"
            );
        }
        true
    }
}

#[cfg(test)]
mod grace_tests {
    use super::*;

    fn dest() -> Destination {
        Destination {
            db_uid: "m".into(),
            addr: "127.0.0.1:5432".parse().unwrap(),
        }
    }

    /// A router to the master and one session on it.
    async fn routed_session() -> (Router, Route) {
        let mut router = Router::new();
        router
            .switch_after(Some(dest()), false, Duration::ZERO)
            .await;
        let session = router.subscribe().borrow().clone();
        (router, session)
    }

    #[tokio::test]
    async fn a_session_ending_within_the_grace_is_never_cut() {
        let (mut router, session) = routed_session().await;
        let cancel = session.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(session);
        });
        let started = tokio::time::Instant::now();
        assert!(
            router
                .switch_after(None, true, Duration::from_secs(20))
                .await
        );
        assert!(!cancel.is_cancelled(), "cut although it ended by itself");
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(router.holding());
    }

    #[tokio::test]
    async fn a_session_still_open_after_the_grace_is_cut() {
        let (mut router, session) = routed_session().await;
        let cancel = session.cancel.clone();
        // Ends only when cut, as a forwarding session does.
        tokio::spawn(async move {
            session.cancel.cancelled().await;
            drop(session);
        });
        let started = tokio::time::Instant::now();
        assert!(
            router
                .switch_after(None, true, Duration::from_millis(300))
                .await
        );
        assert!(cancel.is_cancelled());
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
