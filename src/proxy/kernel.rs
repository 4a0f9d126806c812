//! In-kernel forwarding (`--kernel-forwarding`): the eBPF program of bpf/forward.bpf.c moves
//! every byte of a session from one socket to the other inside the kernel, so the proxy is not
//! woken per message. The proxy keeps every decision: it dials, adds the session's two sockets
//! to the program's maps, and ends the session by closing them (the kernel then drops them from
//! its socket map).
//!
//! It relies on PostgreSQL's startup handshake: the client's first message (SSLRequest,
//! GSSENCRequest or StartupMessage) is read by the proxy and written to the master after both
//! sockets are in the map, and the client sends nothing more before the master answers. Bytes
//! queued on a socket before it joins the map would not be forwarded.

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum KernelForwardingError {
    #[error(
        "this stolon-proxy was built without kernel forwarding (build with --features kernel-forwarding)"
    )]
    NotBuilt,
    #[error(
        "cannot load the kernel-forwarding eBPF program: {0} (the proxy needs CAP_BPF and CAP_NET_ADMIN; see README, In-kernel forwarding)"
    )]
    Load(String),
}

/// A session socket as the eBPF program sees a packet it receives: IPv4 addresses as stored in
/// memory (network order), ports in host order. Only IPv4 sessions are forwarded in the kernel.
type Endpoint = [u32; 4];

fn endpoint(local: SocketAddr, remote: SocketAddr) -> Option<Endpoint> {
    match (local, remote) {
        (SocketAddr::V4(l), SocketAddr::V4(r)) => Some([
            u32::from_ne_bytes(l.ip().octets()),
            u32::from_ne_bytes(r.ip().octets()),
            u32::from(l.port()),
            u32::from(r.port()),
        ]),
        _ => None,
    }
}

fn endpoint_of(s: &TcpStream) -> Option<Endpoint> {
    endpoint(s.local_addr().ok()?, s.peer_addr().ok()?)
}

#[cfg(feature = "kernel-forwarding")]
mod loaded {
    use super::{Endpoint, KernelForwardingError};
    use aya::maps::{HashMap, MapData, SockHash};
    use aya::programs::SkSkb;
    use std::sync::Mutex;

    static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/forward.bpf.o"));

    pub(super) struct Maps {
        pub(super) sockets: SockHash<MapData, Endpoint>,
        pub(super) peers: HashMap<MapData, Endpoint, Endpoint>,
        /// Owns the loaded program and its attachment to `sockets`.
        _program: aya::Ebpf,
    }

    pub(super) fn load() -> Result<Mutex<Maps>, KernelForwardingError> {
        let fail = |e: &dyn std::fmt::Display| KernelForwardingError::Load(e.to_string());
        let mut program = aya::Ebpf::load(PROGRAM).map_err(|e| fail(&e))?;
        let take = |p: &mut aya::Ebpf, name| {
            p.take_map(name)
                .ok_or_else(|| KernelForwardingError::Load(format!("no map {name} in the program")))
        };
        let sockets: SockHash<MapData, Endpoint> =
            SockHash::try_from(take(&mut program, "sockets")?).map_err(|e| fail(&e))?;
        let peers = HashMap::try_from(take(&mut program, "peers")?).map_err(|e| fail(&e))?;
        let verdict: &mut SkSkb = program
            .program_mut("forward")
            .ok_or_else(|| KernelForwardingError::Load("no program `forward`".into()))?
            .try_into()
            .map_err(|e| fail(&e))?;
        verdict.load().map_err(|e| fail(&e))?;
        verdict.attach(sockets.fd()).map_err(|e| fail(&e))?;
        Ok(Mutex::new(Maps {
            sockets,
            peers,
            _program: program,
        }))
    }
}

/// The loaded program and its maps, shared by every session of the proxy.
pub(crate) struct KernelForwarding {
    #[cfg(feature = "kernel-forwarding")]
    maps: std::sync::Mutex<loaded::Maps>,
}

impl std::fmt::Debug for KernelForwarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelForwarding")
    }
}

impl KernelForwarding {
    pub(crate) fn load() -> Result<KernelForwarding, KernelForwardingError> {
        #[cfg(feature = "kernel-forwarding")]
        return Ok(KernelForwarding {
            maps: loaded::load()?,
        });
        #[cfg(not(feature = "kernel-forwarding"))]
        Err(KernelForwardingError::NotBuilt)
    }

    /// Puts a session's two sockets in the kernel's hands. None when it cannot (IPv6, a full
    /// map): the caller copies the bytes itself.
    pub(crate) fn splice(&self, client: &TcpStream, server: &TcpStream) -> Option<Spliced<'_>> {
        let (c, s) = (endpoint_of(client)?, endpoint_of(server)?);
        self.insert(c, s, client.as_raw_fd(), server.as_raw_fd())
            .map_err(|e| tracing::debug!(error = %e, "session not forwarded in the kernel"))
            .ok()?;
        Some(Spliced {
            kernel: self,
            client: c,
            server: s,
        })
    }

    #[cfg(feature = "kernel-forwarding")]
    fn insert(&self, c: Endpoint, s: Endpoint, cfd: i32, sfd: i32) -> Result<(), String> {
        let mut maps = crate::locks::lock(&self.maps);
        let result = (|| {
            maps.peers.insert(c, s, 0)?;
            maps.peers.insert(s, c, 0)?;
            // The master's socket first: a client byte redirected before its peer is in the map
            // would be dropped.
            maps.sockets.insert(s, sfd, 0)?;
            maps.sockets.insert(c, cfd, 0)
        })();
        result.map_err(|e: aya::maps::MapError| {
            let _ = maps.peers.remove(&c);
            let _ = maps.peers.remove(&s);
            let _ = maps.sockets.remove(&s);
            e.to_string()
        })
    }

    #[cfg(not(feature = "kernel-forwarding"))]
    fn insert(&self, _: Endpoint, _: Endpoint, _: i32, _: i32) -> Result<(), String> {
        Err(KernelForwardingError::NotBuilt.to_string())
    }

    fn forget(&self, c: &Endpoint, s: &Endpoint) {
        #[cfg(feature = "kernel-forwarding")]
        {
            // The socket map forgets a socket when it closes; the peer entries are ours.
            let mut maps = crate::locks::lock(&self.maps);
            let _ = maps.peers.remove(c);
            let _ = maps.peers.remove(s);
        }
        #[cfg(not(feature = "kernel-forwarding"))]
        let _ = (c, s);
    }
}

/// A session forwarded by the kernel; dropping it (before closing the sockets) forgets it.
pub(crate) struct Spliced<'a> {
    kernel: &'a KernelForwarding,
    client: Endpoint,
    server: Endpoint,
}

impl Drop for Spliced<'_> {
    fn drop(&mut self) {
        self.kernel.forget(&self.client, &self.server);
    }
}

/// Which side of a spliced session ended first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionEnd {
    Client,
    Master,
}

/// The two sockets of a session the kernel forwards, watched only for their end (EOF, reset).
///
/// The kernel wakes a socket's waiters for reading after each message its program redirected,
/// with nothing left to read (the kernel's sockmap code calls `sk_psock_data_ready` after every
/// verdict).
/// Registered with tokio, whose registrations always ask for reading, the proxy was woken per
/// message for nothing, one wakeup per transaction. So the sockets leave tokio and join an epoll
/// instance of their own that asks only for EPOLLRDHUP (errors and hang-ups are always reported):
/// a data wakeup does not match it, a peer's FIN or reset does. Only that instance is registered
/// with tokio.
///
/// It owns the whole kernel side of the session. Dropping it, on any path (a session cut by a
/// master change drops it mid-wait), forgets the session's map entries first and closes the
/// sockets after: fields drop in declaration order, so no entry outlives its socket.
pub(crate) struct EndWatch<'a> {
    _spliced: Spliced<'a>,
    epoll: AsyncFd<EpollFd>,
    // Kept open for the session's life; closing them removes them from `epoll` and from the
    // program's socket map.
    _client: std::net::TcpStream,
    _server: std::net::TcpStream,
}

pub(crate) struct EpollFd(Epoll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

const CLIENT: u64 = 0;
const MASTER: u64 = 1;

impl<'a> EndWatch<'a> {
    pub(crate) fn new(
        spliced: Spliced<'a>,
        client: TcpStream,
        server: TcpStream,
    ) -> io::Result<EndWatch<'a>> {
        let (client, server) = (client.into_std()?, server.into_std()?);
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let ends = EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        epoll.add(&client, EpollEvent::new(ends, CLIENT))?;
        epoll.add(&server, EpollEvent::new(ends, MASTER))?;
        // SAFETY: `EpollFd` owns its descriptor, which stays open and the same until the AsyncFd
        // (which owns it) is dropped.
        #[allow(unsafe_code)]
        let epoll = unsafe { AsyncFd::register_with_interest(EpollFd(epoll), Interest::READABLE) }?;
        Ok(EndWatch {
            _spliced: spliced,
            epoll,
            _client: client,
            _server: server,
        })
    }

    /// Waits until either socket ends; the master's end wins when both are reported at once.
    pub(crate) async fn ended(&self) -> io::Result<SessionEnd> {
        loop {
            let mut guard = self.epoll.readable().await?;
            let mut events = [EpollEvent::empty(); 2];
            let ready = guard.try_io(|epoll| {
                match epoll.get_ref().0.wait(&mut events, EpollTimeout::ZERO) {
                    Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                    Ok(n) => Ok(n),
                    Err(errno) => Err(io::Error::from(errno)),
                }
            });
            let n = match ready {
                Ok(n) => n?,
                Err(_would_block) => continue,
            };
            let ended = &events[..n];
            return Ok(if ended.iter().any(|e| e.data() == MASTER) {
                SessionEnd::Master
            } else {
                SessionEnd::Client
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_ipv4_only_with_host_order_ports() {
        let l: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let r: SocketAddr = "10.1.2.3:40000".parse().unwrap();
        let e = endpoint(l, r).unwrap();
        assert_eq!(e[0].to_ne_bytes(), [127, 0, 0, 1]);
        assert_eq!(e[1].to_ne_bytes(), [10, 1, 2, 3]);
        assert_eq!((e[2], e[3]), (5432, 40000));
        assert!(endpoint("[::1]:1".parse().unwrap(), r).is_none());
    }
}
