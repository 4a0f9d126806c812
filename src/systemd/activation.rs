//! Socket activation: the listening sockets systemd passed (`LISTEN_FDS`, `LISTEN_PID`).

use listenfd::ListenFd;
use std::net::TcpListener;

#[derive(Debug, thiserror::Error)]
#[error(
    "socket {index} passed by systemd (LISTEN_FDS) is not a listening TCP socket: {source} (use ListenStream= with an address or port in the .socket unit)"
)]
pub struct ActivationError {
    pub index: usize,
    pub source: std::io::Error,
}

/// The passed sockets, not yet taken: [`super::service_env`] reads the environment early, the role
/// takes the sockets when it knows what it needs.
pub struct Activated(ListenFd);

impl Activated {
    pub(super) fn new(fds: ListenFd) -> Activated {
        Activated(fds)
    }

    /// No sockets (not socket-activated, or tests).
    pub fn none() -> Activated {
        Activated(ListenFd::empty())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every passed socket as a non-blocking TCP listener, in `ListenStream=` order. Empty when
    /// none was passed; an error names any socket that is not a listening TCP socket.
    pub fn tcp_listeners(mut self) -> Result<Vec<TcpListener>, ActivationError> {
        let mut out = Vec::with_capacity(self.0.len());
        for index in 0..self.0.len() {
            let listener = self
                .0
                .take_tcp_listener(index)
                .and_then(|l| {
                    l.ok_or_else(|| std::io::Error::other("already taken"))
                        .and_then(|l| l.set_nonblocking(true).map(|()| l))
                })
                .map_err(|source| ActivationError { index, source })?;
            out.push(listener);
        }
        Ok(out)
    }
}
