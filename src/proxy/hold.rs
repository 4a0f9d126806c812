//! Clients held through a failover (`--hold-timeout`): while the check loop says a master is on
//! its way (`Route::hold`), a new client waits for the next route instead of being closed. Its
//! first message stays in its socket meanwhile (the master is dialed only once a route exists),
//! so a held client is served as if it had connected after the switch.
//!
//! A held client only ever takes a route it reads after waking on a change, and only one with a
//! destination whose switch-away has not begun: it can reach the new master, never the old one.
//! It keeps no copy of the route it waits on, so a route switch never waits for held clients.

use super::route::Route;
use crate::metrics::{ProxyMetrics, Refusal};
use tokio::sync::watch;
use tokio::time::Instant;

/// The route to serve a client on, waiting while the route holds clients until `hold_until`
/// (none: no waiting). `Err` says why the client is to be closed: no master and none on its way
/// (or holding ended: fail-closed, invalid clusterdata, shutdown), or the hold bound passed.
/// `already_held`: the client was counted as held when it arrived.
pub(super) async fn next_route(
    routes: &mut watch::Receiver<Route>,
    hold_until: Option<Instant>,
    metrics: &ProxyMetrics,
    mut already_held: bool,
) -> Result<Route, Refusal> {
    loop {
        {
            let route = routes.borrow_and_update();
            if route.routable() {
                return Ok(route.clone());
            }
            if !route.hold {
                return Err(Refusal::NoMaster);
            }
        }
        let Some(until) = hold_until else {
            return Err(Refusal::NoMaster);
        };
        if !already_held {
            metrics.held();
            already_held = true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return Err(Refusal::HoldTimeout),
            changed = routes.changed() => if changed.is_err() {
                // The proxy is gone.
                return Err(Refusal::NoMaster);
            },
        }
    }
}
