//! Clients held through a failover (`--hold-timeout`): while the check loop says a master is on
//! its way (`Route::hold`), a new client waits for the next route instead of being closed. Its
//! first message stays in its socket meanwhile (the master is dialed only once a route exists),
//! so a held client is served as if it had connected after the switch.
//!
//! A held client only ever takes a route it reads after waking on a change, and only one with a
//! destination whose switch-away has not begun: it can reach the new master, never the old one.
//! It keeps no copy of the route it waits on, so a route switch never waits for held clients.

use super::route::Route;
use super::session::{ClientPolicy, first_bytes};
use crate::metrics::{ProxyMetrics, Refusal};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Waits for the client's first bytes and returns the master's route to serve it on, holding
/// it while a master is on its way; none when it is to be closed (silent, gone, no master,
/// stopping). `held`: it arrived while no master was routed.
pub(super) async fn master_route(
    client: &TcpStream,
    routes: &mut watch::Receiver<Route>,
    policy: &ClientPolicy,
    stop: &CancellationToken,
    held: bool,
) -> Option<Route> {
    // PostgreSQL clients speak first (SSLRequest, GSSENCRequest or StartupMessage): until one
    // does, it costs PostgreSQL nothing and the proxy no buffer, and a port scan never reaches
    // the master.
    let spoke = first_bytes(client, policy.startup_timeout);
    tokio::pin!(spoke);
    let mut spoken = false;
    // A client held from its arrival waits for a master and for its first bytes at once: it is
    // closed as soon as holding ends, spoken or not, and its bound counts from its arrival.
    let mut hold_until = policy
        .hold_timeout
        .filter(|_| held)
        .map(|t| Instant::now() + t);
    if let Some(until) = hold_until {
        tokio::select! {
            _ = stop.cancelled() => return None,
            s = &mut spoke => {
                if !s { return None }
                spoken = true;
            }
            r = next_route(routes, Some(until), &policy.metrics, true) => match r {
                // Not kept: the route to use is the one current when the client speaks.
                Ok(_) => hold_until = None,
                Err(why) => {
                    policy.metrics.refused(why);
                    return None;
                }
            },
        }
    }
    if !spoken {
        tokio::select! {
            _ = stop.cancelled() => return None,
            s = &mut spoke => if !s { return None },
        }
    }
    // The route current when the client spoke: one that connected before a switch and spoke
    // after it goes to the new master, waiting for it while it is on its way.
    let hold_until = hold_until.or_else(|| policy.hold_timeout.map(|t| Instant::now() + t));
    tokio::select! {
        _ = stop.cancelled() => None,
        r = next_route(routes, hold_until, &policy.metrics, held) => match r {
            Ok(route) => Some(route),
            Err(why) => {
                policy.metrics.refused(why);
                None
            }
        },
    }
}

/// The route to serve a client on, waiting while the route holds clients until `hold_until`
/// (none: no waiting). `Err` says why the client is to be closed: no master and none on its way
/// (or holding ended: fail-closed, invalid clusterdata, shutdown), or the hold bound passed.
/// `already_held`: the client was counted as held when it arrived.
async fn next_route(
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
