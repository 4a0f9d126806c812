//! Ports on 127.0.0.1: free ones for the processes a test starts, and whether one is closed.

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

/// Every port this test process has handed out, each with its claim (see [`claim`]), held
/// until the process exits. A port is only bound later by the process it is given to, so without
/// this two calls could return the same port (the kernel happily hands a just-released port out
/// again), e.g. a keeper's pg port and etcd's peer port.
static HANDED_OUT: Mutex<Vec<(u16, Option<Flock<File>>)>> = Mutex::new(Vec::new());

/// Claims `port` for this process against the other test processes of this user (nextest runs
/// them side by side): an exclusive lock on a file named after the port, released when the
/// process exits. Random choice alone once gave a keeper restarted on a new port one that
/// another test's process had just been handed, and its PostgreSQL could not bind it. None when
/// another process holds the claim; a claim that cannot be made at all (no temporary
/// directory) is skipped, leaving the random choice.
fn claim(port: u16) -> Option<Option<Flock<File>>> {
    let dir = std::env::temp_dir().join(format!("stolon-it-ports-{}", nix::unistd::getuid()));
    let path = dir.join(port.to_string());
    let file = std::fs::create_dir_all(&dir).and_then(|()| {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
    });
    let Ok(file) = file else {
        return Some(None);
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Some(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => None,
        Err(_) => Some(None),
    }
}

/// Where test ports come from: below the kernel's ephemeral range (32768 and up by default),
/// which the tests' own outgoing connections use. A port from that range was once taken by a
/// connection's local end for the seconds between being handed out and a keeper's PostgreSQL
/// binding it ("Address already in use"). Also below the demo cluster's and the benchmarks'
/// ports (25430 and up, scripts/local-cluster.sh).
const TEST_PORTS: std::ops::Range<u16> = 10_000..25_000;

/// Free TCP ports on 127.0.0.1, distinct from each other and from every port handed out before
/// in this process.
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let span = u128::from(TEST_PORTS.end - TEST_PORTS.start);
    while ports.len() < n {
        // Random, so that the test processes nextest runs side by side rarely try the same.
        let offset = u16::try_from(uuid::Uuid::new_v4().as_u128() % span).unwrap();
        let port = TEST_PORTS.start + offset;
        if handed_out.iter().any(|(p, _)| *p == port) {
            continue;
        }
        let Some(claimed) = claim(port) else {
            continue;
        };
        let Ok(l) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        handed_out.push((port, claimed));
        ports.push(port);
        // Held until all are chosen.
        held.push(l);
    }
    ports
}

pub(crate) fn free_port() -> u16 {
    free_ports(1)[0]
}

/// True if nothing listens on 127.0.0.1:`port` (connection refused).
pub(crate) fn connection_refused(port: u16) -> bool {
    match TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(1),
    ) {
        Ok(_) => false,
        Err(e) => e.kind() == ErrorKind::ConnectionRefused,
    }
}
