//! Ports on 127.0.0.1: free ones for the processes a test starts, and whether one is closed.

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Free TCP ports on 127.0.0.1, all held open together so they are distinct, then released.
pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// True if nothing listens on 127.0.0.1:`port` (connection refused).
pub fn connection_refused(port: u16) -> bool {
    match TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(1),
    ) {
        Ok(_) => false,
        Err(e) => e.kind() == ErrorKind::ConnectionRefused,
    }
}
