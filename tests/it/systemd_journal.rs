//! The real stolon-proxy logging to journald: in a private mount namespace a test socket stands
//! in for `/run/systemd/journal/socket`, and JOURNAL_STREAM names the proxy's stderr as systemd
//! sets it. Needs root (for the mount namespace).

use crate::support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;
use support::cli::clean_env;
use support::systemd::{DEADLINE, PROXY, Running};
use support::{free_port, wait_until};

type Record = BTreeMap<String, Vec<String>>;

/// The journal's native protocol: `NAME=value\n`, or `NAME\n` + u64 LE length + value + `\n`.
fn parse(mut buf: &[u8]) -> Record {
    let mut rec = Record::new();
    while !buf.is_empty() {
        let nl = buf.iter().position(|&b| b == b'\n').unwrap();
        let line = &buf[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let (k, v) = (&line[..eq], &line[eq + 1..]);
            rec.entry(String::from_utf8_lossy(k).into_owned())
                .or_default()
                .push(String::from_utf8_lossy(v).into_owned());
            buf = &buf[nl + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let rest = &buf[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = String::from_utf8_lossy(&rest[8..8 + len]).into_owned();
            rec.entry(name).or_default().push(value);
            buf = &rest[8 + len + 1..];
        }
    }
    rec
}

fn one<'a>(r: &'a Record, k: &str) -> Option<&'a str> {
    r.get(k).and_then(|v| v.first()).map(String::as_str)
}

#[test]
fn records_carry_cluster_role_uid_and_priority() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for a private mount namespace");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run_systemd = dir.path().join("run-systemd");
    std::fs::create_dir_all(run_systemd.join("journal")).unwrap();
    let sock = UnixDatagram::bind(run_systemd.join("journal/socket")).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stderr = dir.path().join("stderr");
    std::fs::File::create(&stderr).unwrap();
    let meta = std::fs::metadata(&stderr).unwrap();

    // No etcd on this port: the proxy logs its start (info) and failing checks (warn).
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = Command::new("unshare");
    clean_env(&mut cmd);
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /run/systemd && exec "$@""#)
        .arg(&run_systemd)
        .arg(&*PROXY)
        .args(["--cluster-name", "jc", "--store-backend", "etcdv3"])
        .args(["--store-endpoints", &endpoint, "--store-timeout", "1s"])
        .args(["--port", &free_port().to_string()])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    let mut proxy = Running::spawn(cmd, &stderr);

    let mut records: Vec<Record> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let has = |records: &[Record], prio: &str, text: &str| {
        records.iter().any(|r| {
            one(r, "PRIORITY") == Some(prio) && one(r, "MESSAGE").is_some_and(|m| m.contains(text))
        })
    };
    wait_until(DEADLINE, "an info and a warning in the journal", || {
        if let Ok(n @ 1..) = sock.recv(&mut buf) {
            records.push(parse(&buf[..n]));
        }
        has(&records, "6", "proxy starting") && has(&records, "4", "proxy check failed")
    });
    assert!(proxy.is_running());

    for r in &records {
        assert_eq!(one(r, "CLUSTER_NAME"), Some("jc"), "{r:?}");
        assert_eq!(one(r, "ROLE"), Some("proxy"), "{r:?}");
        assert_eq!(one(r, "SYSLOG_IDENTIFIER"), Some("stolon-proxy"), "{r:?}");
    }
    let start = records
        .iter()
        .find(|r| one(r, "MESSAGE") == Some("proxy starting"))
        .unwrap();
    let uid = one(start, "PROXY_UID").expect("PROXY_UID on the proxy's records");
    assert_eq!(uid.len(), 8, "{start:?}");
    assert_eq!(
        std::fs::read_to_string(&stderr).unwrap(),
        "",
        "lines on stderr besides the journal"
    );
}
