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
        tokio::time::timeout(SESSION_DRAIN_TIMEOUT, self.0.recv())
            .await
            .is_ok()
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
    /// destination changed.
    pub(super) async fn switch(&mut self, dest: Option<Destination>, hold: bool) -> bool {
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
        // Cancel after the replace: a session that picked up the old route at any moment sees a
        // cancelled token, so none can outlive this switch.
        old.cancel.cancel();
        drop(old);
        let old_sessions = std::mem::replace(&mut self.sessions, sessions);
        if !old_sessions.drained().await {
            tracing::warn!(
                "sessions to the previous master still closing after {SESSION_DRAIN_TIMEOUT:?}"
            );
        }
        true
    }
}
