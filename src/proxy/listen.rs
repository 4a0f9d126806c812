//! The listening socket: either handed to us (systemd socket activation, tests) and then never
//! closed, or bound by the proxy itself and then closed while failing closed with
//! `--stop-listening`, so load balancers see the proxy down.
//!
//! Either way accepting starts only after a successful check. For handed sockets the check loop
//! waits longer (see `Checker::may_accept`): clients of a just-activated proxy, among them the one
//! whose connection started it, wait in the kernel's backlog for a route instead of being closed
//! because the sentinel has not enabled this new proxy yet.

use super::route::Route;
use super::session::{Keepalive, accept_loop};
use std::io;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub(crate) struct Listening {
    /// `None` for a handed socket: we must not close what we did not open.
    bind_to: Option<(String, u16)>,
    /// Handed sockets not accepting yet.
    handed: Vec<TcpListener>,
    routes: watch::Receiver<Route>,
    keepalive: Keepalive,
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
        listeners: Vec<std::net::TcpListener>,
        routes: watch::Receiver<Route>,
        keepalive: Keepalive,
    ) -> io::Result<Self> {
        let listeners = listeners
            .into_iter()
            .map(|l| {
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Listening {
            bind_to: None,
            handed: listeners,
            routes,
            keepalive,
            active: None,
        })
    }

    pub(super) fn owned(
        address: String,
        port: u16,
        routes: watch::Receiver<Route>,
        keepalive: Keepalive,
    ) -> Self {
        Listening {
            bind_to: Some((address, port)),
            handed: Vec::new(),
            routes,
            keepalive,
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
        // tokio sets SO_REUSEADDR, so re-binding right after a close works despite TIME_WAIT.
        let listener = TcpListener::bind((address.as_str(), *port)).await?;
        self.start(vec![listener]);
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

    fn start(&mut self, listeners: Vec<TcpListener>) {
        let stop = CancellationToken::new();
        let addr = listeners.first().and_then(|l| l.local_addr().ok());
        let tasks = listeners
            .into_iter()
            .map(|listener| {
                tokio::spawn(
                    accept_loop(listener, self.routes.clone(), self.keepalive, stop.clone())
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
