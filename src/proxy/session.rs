//! Accepting clients and copying bytes between them and the master (pollon's job upstream):
//! no protocol awareness; the master is dialed once the client has spoken, and the session ends
//! when the master's side closes, the client fails, or its route is cancelled.

use super::hold;
use super::kernel::{EndWatch, KernelForwarding, SessionEnd};
use super::limits::{RateLimited, SessionLimit, SessionPermit};
use super::read_only::ReadOnlyPool;
use super::route::Route;
use crate::metrics::{ProxyMetrics, Refusal};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
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
    /// Sets keepalive and TCP_NODELAY on a listening socket, once: Linux clones every
    /// accepted socket from its listener, options included, which spares each client five
    /// setsockopt calls (noticeable with a connection per transaction).
    pub(crate) fn apply_to_listener(&self, listener: &std::net::TcpListener) -> io::Result<()> {
        let socket = socket2::SockRef::from(listener);
        socket.set_tcp_keepalive(&self.params())?;
        socket.set_tcp_nodelay(true)
    }

    fn params(&self) -> socket2::TcpKeepalive {
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
        ka
    }
}

/// What every client of one listening socket gets.
#[derive(Debug, Clone)]
pub(crate) struct ClientPolicy {
    pub keepalive: Keepalive,
    /// Close a client that has sent nothing for this long (none: never).
    pub startup_timeout: Option<Duration>,
    /// How long a new client waits for a master while the route holds clients (none: it is
    /// closed at once, as upstream).
    pub hold_timeout: Option<Duration>,
    pub limit: Arc<SessionLimit>,
    /// Shared by every accept loop of the proxy, so a flood is reported once, not per socket.
    pub accept_errors: Arc<RateLimited>,
    /// `--kernel-forwarding`: the kernel moves the bytes of each session.
    pub kernel: Option<Arc<KernelForwarding>>,
    /// Sessions, failed dials and refusals, for /metrics.
    pub metrics: ProxyMetrics,
    /// The read-only listener's clients (for the log: they go to standbys).
    pub read_only: bool,
}

impl ClientPolicy {
    /// The same, for the read-only listener: its clients are never held (with no standby to go
    /// to, one rarely comes within seconds), and its sessions are counted apart.
    pub(crate) fn for_read_only(&self) -> ClientPolicy {
        ClientPolicy {
            hold_timeout: None,
            metrics: self.metrics.for_read_only(),
            read_only: true,
            ..self.clone()
        }
    }

    fn backend(&self) -> &'static str {
        if self.read_only {
            "read-only db"
        } else {
            "master"
        }
    }
}

/// Where a listening socket's clients go.
#[derive(Debug, Clone)]
pub(crate) enum Routes {
    /// The master's route (the read-write side).
    Master(watch::Receiver<Route>),
    /// The qualifying standbys' routes, one picked per client (the read-only side).
    ReadOnly(watch::Receiver<Arc<ReadOnlyPool>>),
}

/// Accepts until `stop` is cancelled. Dropping the listener on return closes it (when the proxy
/// owns it).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    routes: Routes,
    policy: ClientPolicy,
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
                // Out of descriptors (EMFILE/ENFILE) repeats until sessions end: back off, and
                // say so once per period rather than ten times a second.
                if let Some(failures) = policy.accept_errors.hit() {
                    tracing::warn!(error = %e, failures, "accepting clients failed; retrying");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                }
            }
        };
        let held = match &routes {
            Routes::Master(routes) => {
                let route = routes.borrow();
                if route.routable() {
                    false
                } else if route.hold && policy.hold_timeout.is_some() {
                    true
                } else {
                    // Fail closed: the client sees its connection closed at once.
                    policy.metrics.refused(Refusal::NoMaster);
                    continue;
                }
            }
            Routes::ReadOnly(pool) => {
                if pool.borrow().is_empty() {
                    policy.metrics.refused(Refusal::NoStandby);
                    continue;
                }
                false
            }
        };
        // Held clients take a place too: a flood during a failover is bounded like any other.
        let Some(permit) = policy.limit.try_acquire() else {
            policy.metrics.refused(Refusal::MaxConnections);
            continue;
        };
        if held {
            policy.metrics.held();
        }
        tokio::spawn(
            serve(
                client,
                routes.clone(),
                policy.clone(),
                stop.clone(),
                permit,
                held,
            )
            .in_current_span(),
        );
    }
}

/// `held`: the client arrived while no master was routed and waits for one.
async fn serve(
    client: TcpStream,
    mut routes: Routes,
    policy: ClientPolicy,
    stop: CancellationToken,
    _permit: SessionPermit,
    held: bool,
) {
    // Keepalive and TCP_NODELAY come from the listener (`Keepalive::apply_to_listener`).
    let Some(route) = route_when_spoken(&client, &mut routes, &policy, &stop, held).await else {
        return;
    };
    let Some(dest) = route.dest.as_deref() else {
        return;
    };
    let dial = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(dest.addr));
    let server = tokio::select! {
        // A master change abandons dials to the old master.
        _ = route.cancel.cancelled() => return,
        d = dial => match d {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                policy.metrics.connect_error();
                tracing::warn!(db = %dest.db_uid, addr = %dest.addr, error = %e, "cannot connect to the {}", policy.backend());
                return;
            }
            Err(_) => {
                policy.metrics.connect_error();
                tracing::warn!(db = %dest.db_uid, addr = %dest.addr, "connecting to the {} timed out after {DIAL_TIMEOUT:?}", policy.backend());
                return;
            }
        },
    };
    let _session = policy.metrics.session_started();
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = route.cancel.cancelled() => {}
        _ = forward(client, server, policy.kernel.as_deref(), &policy.metrics) => {}
    }
}

/// Waits for the client's first bytes and returns the route to serve it on; none when it is to
/// be closed (silent, gone, no master or standby, stopping).
async fn route_when_spoken(
    client: &TcpStream,
    routes: &mut Routes,
    policy: &ClientPolicy,
    stop: &CancellationToken,
    held: bool,
) -> Option<Route> {
    match routes {
        Routes::Master(routes) => hold::master_route(client, routes, policy, stop, held).await,
        Routes::ReadOnly(pool) => {
            tokio::select! {
                _ = stop.cancelled() => return None,
                spoke = first_bytes(client, policy.startup_timeout) => if !spoke { return None },
            }
            // Picked when the client spoke, as on the master's side.
            let route = pool.borrow().pick();
            if route.is_none() {
                policy.metrics.refused(Refusal::NoStandby);
            }
            route
        }
    }
}

async fn forward(
    client: TcpStream,
    server: TcpStream,
    kernel: Option<&KernelForwarding>,
    metrics: &ProxyMetrics,
) {
    match kernel {
        Some(kernel) => forward_in_kernel(kernel, client, server, metrics).await,
        None => pump(client, server).await,
    }
}

/// Hands the session to the kernel (src/proxy/kernel.rs) and waits for its end. The client's
/// first message, already waiting, is read here and written to the master once both sockets are
/// in the kernel's map: bytes queued before a socket joins it would not be forwarded.
async fn forward_in_kernel(
    kernel: &KernelForwarding,
    client: TcpStream,
    mut server: TcpStream,
    metrics: &ProxyMetrics,
) {
    let spliced = {
        // Freed before the session's long wait: an idle session keeps no 16 KiB buffer.
        let mut first = vec![0u8; FIRST_MESSAGE_MAX];
        let n = match client.try_read(&mut first) {
            Ok(n) if n > 0 => n,
            _ => return,
        };
        let spliced = kernel.splice(&client, &server);
        if server.write_all(&first[..n]).await.is_err() {
            return;
        }
        spliced
    };
    let Some(spliced) = spliced else {
        return pump(client, server).await;
    };
    metrics.kernel_forwarded();
    // Only the end of either socket still concerns the proxy. The program passes nothing up:
    // both sockets' peers stay in its map for the whole session. Dropping the watch ends the
    // session, map entries first.
    let watch = match EndWatch::new(spliced, client, server) {
        Ok(watch) => watch,
        Err(e) => {
            tracing::debug!(error = %e, "cannot watch a kernel-forwarded session; ending it");
            return;
        }
    };
    match watch.ended().await {
        Ok(SessionEnd::Master) => {
            // The master's last bytes (a FATAL message before it closes) reach the client
            // through the kernel's deferred redirect work, which unmapping or closing the
            // client's socket first would discard. Seen under load in CI.
            tokio::time::sleep(KERNEL_LAST_BYTES_GRACE).await;
        }
        Ok(SessionEnd::Client) => {}
        Err(e) => {
            tracing::debug!(error = %e, "watching a kernel-forwarded session failed; ending it")
        }
    }
    drop(watch);
}

/// How long a session the master ended stays open for the kernel to deliver the master's last
/// bytes to the client (its redirect runs on a work queue, milliseconds late under load).
const KERNEL_LAST_BYTES_GRACE: Duration = Duration::from_millis(100);

/// Bounds the client's first message read in one go (a StartupMessage is far smaller).
const FIRST_MESSAGE_MAX: usize = 16 * 1024;

/// Whether the client sent something within `timeout` (false: it closed, failed or stayed
/// silent). The bytes stay in the socket for the master.
pub(super) async fn first_bytes(client: &TcpStream, timeout: Option<Duration>) -> bool {
    let mut probe = [0u8; 1];
    let peek = client.peek(&mut probe);
    let peeked = match timeout {
        Some(t) => match tokio::time::timeout(t, peek).await {
            Ok(p) => p,
            Err(_) => return false,
        },
        None => peek.await,
    };
    matches!(peeked, Ok(n) if n > 0)
}

/// Copies both ways until the master's side ends. A client that closes its side has that passed
/// on (PostgreSQL then closes its own); PostgreSQL closing ends the session at once, both
/// sockets closed, rather than leaving the client's open until it next sends something.
async fn pump(mut client: TcpStream, mut server: TcpStream) {
    let (mut client_rx, mut client_tx) = client.split();
    let (mut server_rx, mut server_tx) = server.split();
    let to_client = tokio::io::copy(&mut server_rx, &mut client_tx);
    let to_server = async {
        let copied = tokio::io::copy(&mut client_rx, &mut server_tx).await;
        if copied.is_ok() {
            let _ = server_tx.shutdown().await;
        }
        copied
    };
    tokio::pin!(to_client, to_server);
    let mut client_closed = false;
    loop {
        tokio::select! {
            _ = &mut to_client => return,
            copied = &mut to_server, if !client_closed => match copied {
                Ok(_) => client_closed = true,
                Err(_) => return,
            },
        }
    }
}
