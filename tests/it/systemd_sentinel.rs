//! The real stolon-sentinel as a systemd service: a test notify socket stands in for systemd
//! (NOTIFY_SOCKET, WATCHDOG_USEC) and a real etcd is the store.

use crate::support;

use nix::sys::signal::Signal;
use std::process::Command;
use std::time::{Duration, Instant};
use support::cli::clean_env;
use support::systemd::{
    DEADLINE, NotifySocket, Running, STORE_TIMEOUT, assert_twice_per_period, ctl,
};
use support::{Etcd, wait_until};

const CLUSTER: &str = "s";
use support::SENTINEL;
const WATCHDOG: Duration = Duration::from_secs(2);

#[test]
fn sentinel_ready_only_after_the_store_answered_watchdog_from_its_loop_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::reserve();
    let notify = NotifySocket::bind();

    let mut cmd = Command::new(&*SENTINEL);
    clean_env(&mut cmd);
    cmd.args(etcd.flags(CLUSTER, STORE_TIMEOUT))
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string());
    let mut sentinel = Running::spawn(cmd, &dir.path().join("stderr"));

    // The store is down: the loop runs (status, watchdog) but the sentinel is not ready.
    notify.wait_for("a status line", |l| l.starts_with("STATUS="));
    wait_until(DEADLINE, "watchdog pings while the store is down", || {
        notify.count("WATCHDOG=1") >= 3
    });
    assert_eq!(
        notify.first(|l| l == "READY=1"),
        None,
        "ready without a store"
    );
    assert!(sentinel.is_running(), "{}", sentinel.stderr());

    let store_up_at = Instant::now();
    etcd.start_again();
    let ready_at = notify.wait_for("READY=1", |l| l == "READY=1");
    assert!(ready_at > store_up_at, "READY=1 before the store answered");
    // Ready means its info is published: stolonctl lists it.
    let listed = etcd.keys(&format!("stolon/cluster/{CLUSTER}/sentinels/info/"));
    assert_eq!(listed.len(), 1, "sentinel info not published: {listed:?}");

    // Leader of an uninitialised cluster, then of an initialised one: the status follows.
    ctl(&etcd, CLUSTER, &["init", "-y"], None);
    wait_until(DEADLINE, "a status naming the leadership", || {
        notify
            .assignments()
            .iter()
            .any(|(_, l)| l.starts_with("STATUS=") && l.contains("leader"))
    });

    // At least two pings per watchdog period, from the check loop.
    wait_until(DEADLINE, "pings over two watchdog periods", || {
        notify
            .assignments()
            .iter()
            .filter(|(t, l)| *t >= ready_at && l == "WATCHDOG=1")
            .count()
            >= 5
    });
    let pings: Vec<Instant> = notify
        .assignments()
        .into_iter()
        .filter(|(t, l)| *t >= ready_at && l == "WATCHDOG=1")
        .map(|(t, _)| t)
        .collect();
    assert_twice_per_period(&pings, WATCHDOG);

    sentinel.signal(Signal::SIGTERM);
    let exit = sentinel.wait_exit();
    assert!(exit.success(), "{exit:?}: {}", sentinel.stderr());
    let stopping = notify.wait_for("STOPPING=1", |l| l == "STOPPING=1");
    assert!(stopping > ready_at);
    assert_eq!(notify.count("READY=1"), 1, "READY=1 sent more than once");
}
