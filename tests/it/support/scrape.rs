//! Reading a role's /metrics (`--metrics-listen-address`) as Prometheus would.

use std::io::{Read, Write};
use std::time::Duration;

/// The raw HTTP/1.0 answer to `GET <path>` on 127.0.0.1:`port`; None when nothing answers.
pub(crate) fn get(port: u16, path: &str) -> Option<String> {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// The metrics text of the role whose endpoint is on `port`; None when it does not answer 200.
pub(crate) fn scrape(port: u16) -> Option<String> {
    let answer = get(port, "/metrics")?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_string())
}

/// The value of sample `series` (name and labels exactly as rendered) in `text`.
pub(crate) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// [`value`] from a fresh scrape.
pub(crate) fn metric(port: u16, series: &str) -> Option<f64> {
    value(&scrape(port)?, series)
}
