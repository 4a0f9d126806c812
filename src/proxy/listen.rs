//! The listening socket: either handed to us (systemd socket activation, tests) and then never
//! closed, or bound by the proxy itself and then closed while failing closed with
//! `--stop-listening`, so load balancers see the proxy down.
//!
//! Either way accepting starts only after a successful check. For handed sockets the check loop
//! waits longer (see `Checker::may_accept`): clients of a just-activated proxy, among them the one
//! whose connection started it, wait in the kernel's backlog for a route instead of being closed
//! because the sentinel has not enabled this new proxy yet.

use super::session::{ClientPolicy, Keepalive, Routes, accept_loop};
use super::workers::SessionWorkers;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub(crate) struct Listening {
    /// `None` for a handed socket: we must not close what we did not open.
    bind_to: Option<(String, u16)>,
    /// Handed sockets not accepting yet, one copy per session worker.
    handed: Vec<TcpListener>,
    routes: Routes,
    policy: ClientPolicy,
    workers: Arc<SessionWorkers>,
    active: Option<Active>,
}

struct Active {
    stop: CancellationToken,
    /// One accept loop per socket (systemd may pass several, e.g. IPv4 and IPv6).
    tasks: Vec<JoinHandle<()>>,
    addr: Option<SocketAddr>,
}

impl Listening {
    pub(super) fn handed(
        listeners: Vec<TcpListener>,
        routes: Routes,
        policy: ClientPolicy,
        workers: Arc<SessionWorkers>,
    ) -> io::Result<Self> {
        let mut handed = Vec::new();
        for l in listeners {
            handed.extend(copies(l, workers.len(), &policy.keepalive)?);
        }
        Ok(Listening {
            bind_to: None,
            handed,
            routes,
            policy,
            workers,
            active: None,
        })
    }

    pub(super) fn owned(
        address: String,
        port: u16,
        routes: Routes,
        policy: ClientPolicy,
        workers: Arc<SessionWorkers>,
    ) -> Self {
        Listening {
            bind_to: Some((address, port)),
            handed: Vec::new(),
            routes,
            policy,
            workers,
            active: None,
        }
    }

    pub(super) fn is_owned(&self) -> bool {
        self.bind_to.is_some()
    }

    pub(super) fn is_listening(&self) -> bool {
        self.active.is_some()
    }

    /// The bound address, for the status line and logs.
    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        self.active.as_ref().and_then(|a| a.addr)
    }

    /// Binds the owned socket if it is not open. Returns whether it was (re)opened now.
    pub(super) async fn ensure(&mut self) -> io::Result<bool> {
        if self.active.is_some() {
            return Ok(false);
        }
        let Some((address, port)) = &self.bind_to else {
            return Ok(false);
        };
        let listener = bind(address, *port).await?;
        let listeners = copies(listener, self.workers.len(), &self.policy.keepalive)?;
        self.start(listeners);
        Ok(true)
    }

    /// Starts accepting on the handed sockets, if not yet. Returns whether it started now.
    pub(super) fn start_handed(&mut self) -> bool {
        if self.active.is_some() || self.handed.is_empty() {
            return false;
        }
        let handed = std::mem::take(&mut self.handed);
        self.start(handed);
        true
    }

    /// `listeners`: every socket's copies, as `copies` makes them; copy i goes to worker i.
    fn start(&mut self, listeners: Vec<TcpListener>) {
        let stop = CancellationToken::new();
        let addr = listeners.first().and_then(|l| l.local_addr().ok());
        let tasks = listeners
            .into_iter()
            .enumerate()
            .map(|(i, listener)| {
                let (routes, policy, stop) =
                    (self.routes.clone(), self.policy.clone(), stop.clone());
                self.workers.handle(i).spawn(
                    async move {
                        // Registered with the worker's own reactor, so it must be made there.
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(l) => accept_loop(l, routes, policy, stop).await,
                            Err(e) => {
                                tracing::error!(error = %e, "cannot accept on a listening socket")
                            }
                        }
                    }
                    .in_current_span(),
                )
            })
            .collect();
        self.active = Some(Active { stop, tasks, addr });
    }

    /// Closes the owned socket; a handed one keeps accepting (and closing) clients.
    pub(super) async fn close(&mut self) {
        if self.is_owned() {
            self.stop().await;
        }
    }

    /// Stops accepting, whatever the socket's origin (shutdown).
    pub(super) async fn stop(&mut self) {
        if let Some(active) = self.active.take() {
            active.stop.cancel();
            // Each accept loop owns its listener: once it returns the socket is closed.
            for task in active.tasks {
                let _ = task.await;
            }
        }
    }
}

/// `n` descriptors of the same listening socket, non-blocking, one per session worker: the
/// kernel hands each new client to one of the workers waiting on it.
fn copies(listener: TcpListener, n: usize, keepalive: &Keepalive) -> io::Result<Vec<TcpListener>> {
    keepalive.apply_to_listener(&listener)?;
    listener.set_nonblocking(true)?;
    let mut all = Vec::with_capacity(n.max(1));
    for _ in 1..n.max(1) {
        all.push(listener.try_clone()?);
    }
    all.push(listener);
    Ok(all)
}

/// Binds with SO_REUSEADDR, so re-binding right after a close works despite TIME_WAIT, and a
/// backlog long enough for a burst of clients (the kernel caps it at net.core.somaxconn).
async fn bind(address: &str, port: u16) -> io::Result<TcpListener> {
    const BACKLOG: i32 = 4096;
    let mut last_error = None;
    for addr in tokio::net::lookup_host((address, port)).await? {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        match socket
            .bind(&addr.into())
            .and_then(|()| socket.listen(BACKLOG))
        {
            Ok(()) => return Ok(socket.into()),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("no address for {address}"))
    }))
}
