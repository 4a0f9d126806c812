//! The read-only side's destinations: one route per qualifying standby (or the master, as a
//! fallback), shared with the read-only accept loops through a watch channel. Each route has its
//! own cancellation token, so a standby that stops qualifying loses its sessions and no other.
//! A new client takes the route with the fewest sessions, the first of them from a turning start
//! (so equal routes take turns): a few atomic reads per client, nothing per byte.

use super::route::{Destination, Route, RouteSessions, SESSION_DRAIN_TIMEOUT};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::watch;

/// What new read-only clients are spread over.
#[derive(Debug, Default)]
pub(crate) struct ReadOnlyPool {
    routes: Vec<Route>,
    next: AtomicUsize,
}

impl ReadOnlyPool {
    /// The route for a new client: a routable one with the fewest sessions, the next in turn
    /// among equals; none when there is nowhere to go. Long sessions (a reporting job) then do
    /// not pile up on one standby while round robin keeps sending it its share of new ones.
    pub(crate) fn pick(&self) -> Option<Route> {
        let n = self.routes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.routes[(start + i) % n])
            .filter(|r| r.routable())
            .min_by_key(|r| r.holders())
            .cloned()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Where the read-only side sends clients; what the check loop decides.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ReadOnlyTargets {
    pub standbys: Vec<Destination>,
    /// The master, when no standby qualifies and `--read-only-fallback-master` allows it.
    pub fallback: Option<Destination>,
}

/// One destination's route. Kept by kind as well as by db: the sessions a standby had as a
/// standby are cut when it is promoted, even if the same db then serves as the fallback.
struct Backend {
    fallback: bool,
    route: Route,
    sessions: RouteSessions,
}

impl Backend {
    fn is(&self, fallback: bool, dest: &Destination) -> bool {
        self.fallback == fallback && self.route.dest.as_deref() == Some(dest)
    }
}

pub(crate) struct ReadOnlyRouter {
    tx: watch::Sender<Arc<ReadOnlyPool>>,
    backends: Vec<Backend>,
}

impl ReadOnlyRouter {
    pub(super) fn new() -> Self {
        let (tx, _) = watch::channel(Arc::new(ReadOnlyPool::default()));
        ReadOnlyRouter {
            tx,
            backends: Vec::new(),
        }
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<Arc<ReadOnlyPool>> {
        self.tx.subscribe()
    }

    /// What new clients go to now.
    pub(super) fn current(&self) -> ReadOnlyTargets {
        let mut targets = ReadOnlyTargets::default();
        for b in &self.backends {
            let Some(dest) = b.route.dest.as_deref() else {
                continue;
            };
            if b.fallback {
                targets.fallback = Some(dest.clone());
            } else {
                targets.standbys.push(dest.clone());
            }
        }
        targets
    }

    /// Sends new clients to `targets`. The sessions of every destination no longer in it are
    /// closed, and this returns once they are gone (or the drain bound passed), so the caller
    /// may then acknowledge a new proxy generation. Destinations kept keep their sessions.
    /// Returns whether anything changed.
    pub(super) async fn switch(&mut self, targets: &ReadOnlyTargets) -> bool {
        let wanted: Vec<(bool, &Destination)> = targets
            .standbys
            .iter()
            .map(|d| (false, d))
            .chain(targets.fallback.iter().map(|d| (true, d)))
            .collect();
        let unchanged = wanted.len() == self.backends.len()
            && wanted
                .iter()
                .zip(&self.backends)
                .all(|((fallback, dest), b)| b.is(*fallback, dest));
        if unchanged {
            return false;
        }
        let mut old = std::mem::take(&mut self.backends);
        for (fallback, dest) in wanted {
            let backend = match old.iter().position(|b| b.is(fallback, dest)) {
                Some(i) => old.swap_remove(i),
                None => {
                    let (route, sessions) = Route::new(Some(dest.clone()), false);
                    Backend {
                        fallback,
                        route,
                        sessions,
                    }
                }
            };
            self.backends.push(backend);
        }
        let routes = self.backends.iter().map(|b| b.route.clone()).collect();
        // Replaced before the old routes are cancelled: a client picking a route at any moment
        // gets one that is current, or one whose token is cancelled under it.
        self.tx.send_replace(Arc::new(ReadOnlyPool {
            routes,
            next: AtomicUsize::new(0),
        }));
        let mut closing = Vec::with_capacity(old.len());
        for gone in old {
            gone.route.cancel.cancel();
            closing.push(gone.sessions);
        }
        for sessions in closing {
            if !sessions.drained().await {
                tracing::warn!(
                    "read-only sessions to a db that no longer qualifies still closing after {SESSION_DRAIN_TIMEOUT:?}"
                );
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(uid: &str, port: u16) -> Destination {
        Destination {
            db_uid: uid.into(),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn standbys(d: &[Destination]) -> ReadOnlyTargets {
        ReadOnlyTargets {
            standbys: d.to_vec(),
            fallback: None,
        }
    }

    #[tokio::test]
    async fn clients_take_the_standbys_in_turn() {
        let mut router = ReadOnlyRouter::new();
        let rx = router.subscribe();
        assert!(rx.borrow().pick().is_none());
        let (a, b) = (dest("a", 1), dest("b", 2));
        assert!(router.switch(&standbys(&[a.clone(), b.clone()])).await);
        let picks: Vec<_> = (0..4)
            .map(|_| rx.borrow().pick().unwrap().dest.unwrap().db_uid.to_string())
            .collect();
        assert_eq!(picks, ["a", "b", "a", "b"]);
        assert!(!router.switch(&standbys(&[a, b])).await, "nothing changed");
    }

    #[tokio::test]
    async fn clients_go_to_the_standby_with_the_fewest_sessions() {
        let mut router = ReadOnlyRouter::new();
        let rx = router.subscribe();
        router
            .switch(&standbys(&[dest("a", 1), dest("b", 2)]))
            .await;
        let pick = || rx.borrow().pick().unwrap();
        let db = |r: &Route| r.dest.as_ref().unwrap().db_uid.to_string();
        // Four sessions, two on each; then b's two end: a keeps its two long ones.
        let mut sessions: Vec<Route> = (0..4).map(|_| pick()).collect();
        sessions.retain(|r| db(r) == "a");
        assert_eq!(sessions.len(), 2);
        // Round robin would send the next two one to each; both go to b.
        let next: Vec<Route> = (0..2).map(|_| pick()).collect();
        assert_eq!(next.iter().map(db).collect::<Vec<_>>(), ["b", "b"]);
        // Level again: they take turns.
        let turns: Vec<String> = (0..2).map(|_| db(&pick())).collect();
        assert_ne!(turns[0], turns[1]);
    }

    #[tokio::test]
    async fn only_the_sessions_of_a_standby_that_left_are_cut() {
        let mut router = ReadOnlyRouter::new();
        let rx = router.subscribe();
        let (a, b) = (dest("a", 1), dest("b", 2));
        router.switch(&standbys(&[a.clone(), b.clone()])).await;
        let on_a = rx.borrow().pick().unwrap();
        let on_b = rx.borrow().pick().unwrap();
        // A session ends when its route is cancelled and it drops its clone of the route.
        let a_session = tokio::spawn({
            let route = on_a.clone();
            async move { route.cancel.cancelled().await }
        });
        drop(on_a);
        router.switch(&standbys(std::slice::from_ref(&b))).await;
        a_session.await.unwrap();
        assert!(!on_b.cancel.is_cancelled());
        assert_eq!(router.current(), standbys(&[b]));
    }

    #[tokio::test]
    async fn a_promoted_standby_serving_as_fallback_still_loses_its_standby_sessions() {
        let mut router = ReadOnlyRouter::new();
        let rx = router.subscribe();
        let a = dest("a", 1);
        router.switch(&standbys(std::slice::from_ref(&a))).await;
        let as_standby = rx.borrow().pick().unwrap();
        let session = as_standby.cancel.clone();
        drop(as_standby);
        let fallback = ReadOnlyTargets {
            standbys: Vec::new(),
            fallback: Some(a.clone()),
        };
        assert!(router.switch(&fallback).await);
        assert!(session.is_cancelled());
        let as_fallback = rx.borrow().pick().unwrap();
        assert!(!as_fallback.cancel.is_cancelled());
        assert_eq!(router.current(), fallback);
    }

    #[tokio::test]
    async fn emptied_pool_refuses_and_cuts_everything() {
        let mut router = ReadOnlyRouter::new();
        let rx = router.subscribe();
        router.switch(&standbys(&[dest("a", 1)])).await;
        let token = rx.borrow().pick().unwrap().cancel.clone();
        router.switch(&ReadOnlyTargets::default()).await;
        assert!(token.is_cancelled());
        assert!(rx.borrow().is_empty());
        assert!(rx.borrow().pick().is_none());
    }
}
