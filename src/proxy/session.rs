//! Accepting clients and copying bytes between them and the master (pollon's job upstream):
//! no protocol awareness, the session ends when either side closes or its route is cancelled.

use super::route::Route;
use std::io;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Bound on dialing the master, so clients of an unreachable master get a closed connection
/// instead of hanging for the OS connect timeout (upstream dials without a bound).
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause after an accept error (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// TCP keepalive on client sockets: always enabled; each value applied only when non-zero
/// (0 = OS default), as upstream's `--tcp-keepalive-*` flags.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Keepalive {
    pub idle_secs: u32,
    pub interval_secs: u32,
    pub count: u32,
}

impl Keepalive {
    pub(crate) fn apply(&self, stream: &TcpStream) -> io::Result<()> {
        let mut ka = socket2::TcpKeepalive::new();
        if self.idle_secs > 0 {
            ka = ka.with_time(Duration::from_secs(self.idle_secs.into()));
        }
        if self.interval_secs > 0 {
            ka = ka.with_interval(Duration::from_secs(self.interval_secs.into()));
        }
        if self.count > 0 {
            ka = ka.with_retries(self.count);
        }
        socket2::SockRef::from(stream).set_tcp_keepalive(&ka)
    }
}

/// Accepts until `stop` is cancelled; each client is served under the route current at accept
/// time. Dropping the listener on return closes it (when the proxy owns it).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    routes: watch::Receiver<Route>,
    keepalive: Keepalive,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a client failed");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                }
            }
        };
        let route = routes.borrow().clone();
        if route.dest.is_none() || route.cancel.is_cancelled() {
            // Fail closed: the client sees its connection closed at once.
            continue;
        }
        tokio::spawn(serve(client, route, keepalive).in_current_span());
    }
}

async fn serve(mut client: TcpStream, route: Route, keepalive: Keepalive) {
    let Some(dest) = route.dest.as_deref() else {
        return;
    };
    if let Err(e) = keepalive.apply(&client) {
        tracing::debug!(error = %e, "cannot set TCP keepalive on a client socket");
    }
    let _ = client.set_nodelay(true);
    let dial = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(dest.addr));
    let mut server = tokio::select! {
        // A master change abandons dials to the old master.
        _ = route.cancel.cancelled() => return,
        d = dial => match d {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(db = %dest.db_uid, addr = %dest.addr, error = %e, "cannot connect to the master");
                return;
            }
            Err(_) => {
                tracing::warn!(db = %dest.db_uid, addr = %dest.addr, "connecting to the master timed out after {DIAL_TIMEOUT:?}");
                return;
            }
        },
    };
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = route.cancel.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
}
