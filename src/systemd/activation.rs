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

/// The `FileDescriptorName=` of the proxy's read-only socket unit
/// (`stolon-proxy-read-only@.socket`): sockets so named take read-only clients.
pub const READ_ONLY_SOCKET_NAME: &str = "read-only";

/// The passed sockets, not yet taken: [`super::service_env`] reads the environment early, the role
/// takes the sockets when it knows what it needs.
pub struct Activated {
    fds: ListenFd,
    /// `LISTEN_FDNAMES`, one per socket (systemd's `FileDescriptorName=`, the socket unit's name
    /// by default); empty when not given or not matching the sockets.
    names: Vec<String>,
}

/// The passed sockets by use: every socket not named [`READ_ONLY_SOCKET_NAME`] is a copy of the
/// main address (e.g. its IPv4 and IPv6 sides).
#[derive(Debug, Default)]
pub struct ActivatedListeners {
    pub main: Vec<TcpListener>,
    pub read_only: Vec<TcpListener>,
}

impl Activated {
    /// `names`: the value of `LISTEN_FDNAMES`, if any.
    pub(super) fn new(fds: ListenFd, names: Option<String>) -> Activated {
        let names = socket_names(fds.len(), names.as_deref());
        Activated { fds, names }
    }

    /// No sockets (not socket-activated, or tests).
    pub fn none() -> Activated {
        Activated {
            fds: ListenFd::empty(),
            names: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.fds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every passed socket as a non-blocking TCP listener, in `ListenStream=` order, sorted by
    /// name into the main and the read-only ones. Empty when none was passed; an error names any
    /// socket that is not a listening TCP socket.
    pub fn tcp_listeners(mut self) -> Result<ActivatedListeners, ActivationError> {
        let mut out = ActivatedListeners::default();
        for index in 0..self.fds.len() {
            let listener = self
                .fds
                .take_tcp_listener(index)
                .and_then(|l| {
                    l.ok_or_else(|| std::io::Error::other("already taken"))
                        .and_then(|l| l.set_nonblocking(true).map(|()| l))
                })
                .map_err(|source| ActivationError { index, source })?;
            if self.names.get(index).map(String::as_str) == Some(READ_ONLY_SOCKET_NAME) {
                out.read_only.push(listener);
            } else {
                out.main.push(listener);
            }
        }
        Ok(out)
    }
}

/// The names of `count` passed sockets from `LISTEN_FDNAMES` (colon-separated). Names that do
/// not match the sockets one to one say nothing reliable about any: none then.
fn socket_names(count: usize, names: Option<&str>) -> Vec<String> {
    let names: Vec<String> = names
        .map(|n| n.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    if names.len() == count {
        names
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_count_only_when_there_is_one_per_socket() {
        assert_eq!(
            socket_names(
                3,
                Some("stolon-proxy@main.socket:stolon-proxy@main.socket:read-only")
            ),
            [
                "stolon-proxy@main.socket",
                "stolon-proxy@main.socket",
                "read-only"
            ]
        );
        assert!(socket_names(2, Some("read-only")).is_empty());
        assert!(socket_names(1, None).is_empty());
        assert!(socket_names(0, None).is_empty());
    }
}
