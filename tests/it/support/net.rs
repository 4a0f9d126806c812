//! Ports on 127.0.0.1: free ones for the processes a test starts, and whether one is closed.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

/// Every port this test process has handed out. A port is only bound later by the process it is
/// given to, so without this two calls could return the same port (the kernel happily hands a
/// just-released port out again), e.g. a keeper's pg port and etcd's peer port.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Where test ports come from: below the kernel's ephemeral range (32768 and up by default),
/// which the tests' own outgoing connections use. A port from that range was once taken by a
/// connection's local end for the seconds between being handed out and a keeper's PostgreSQL
/// binding it ("Address already in use"). Also below the demo cluster's and the benchmarks'
/// ports (25430 and up, scripts/local-cluster.sh).
const TEST_PORTS: std::ops::Range<u16> = 10_000..25_000;

/// Free TCP ports on 127.0.0.1, distinct from each other and from every port handed out before
/// in this process.
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let handed_out = guard.get_or_insert_with(HashSet::new);
    let mut held = Vec::new();
    let mut ports = Vec::new();
    let span = u128::from(TEST_PORTS.end - TEST_PORTS.start);
    while ports.len() < n {
        // Random, so that the test processes nextest runs side by side rarely try the same.
        let offset = u16::try_from(uuid::Uuid::new_v4().as_u128() % span).unwrap();
        let port = TEST_PORTS.start + offset;
        if handed_out.contains(&port) {
            continue;
        }
        let Ok(l) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        handed_out.insert(port);
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
