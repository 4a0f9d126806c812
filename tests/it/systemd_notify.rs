//! The real stolon-proxy as a systemd service: a test notify socket stands in for systemd
//! (NOTIFY_SOCKET, WATCHDOG_USEC), `systemd-socket-activate` passes the listening socket, a real
//! etcd holds the clusterdata.

use crate::support;

use nix::sys::signal::Signal;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};
use stolon::cluster::{ClusterData, Db};
use support::cli::clean_env;
use support::systemd::{
    DEADLINE, NotifySocket, PROXY, Running, STORE_TIMEOUT, assert_twice_per_period, ctl,
};
use support::{Etcd, free_port, wait_until};

const CLUSTER: &str = "c";
const WATCHDOG: Duration = Duration::from_secs(2);

fn proxy_args(etcd: &Etcd, port: u16) -> Vec<String> {
    let mut a = etcd.flags(CLUSTER, STORE_TIMEOUT);
    a.extend(["--listen-address", "127.0.0.1", "--port", &port.to_string()].map(String::from));
    a
}

/// WATCHDOG=1 assignments after `since`.
fn pings_after(notify: &NotifySocket, since: Instant) -> Vec<Instant> {
    notify
        .assignments()
        .into_iter()
        .filter(|(t, l)| *t >= since && l == "WATCHDOG=1")
        .map(|(t, _)| t)
        .collect()
}

#[test]
fn proxy_ready_only_once_serving_watchdog_from_its_loop_reload_and_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, "log-level = \"warn\"\n").unwrap();
    let mut etcd = Etcd::reserve();
    let notify = NotifySocket::bind();
    let port = free_port();

    let mut cmd = Command::new(&*PROXY);
    clean_env(&mut cmd);
    cmd.args(proxy_args(&etcd, port))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string());
    let mut proxy = Running::spawn(cmd, &dir.path().join("stderr"));

    // The store is down: the loop runs (status, watchdog) but the proxy is not ready.
    notify.wait_for("a status line", |l| l.starts_with("STATUS="));
    wait_until(DEADLINE, "watchdog pings while the store is down", || {
        notify.count("WATCHDOG=1") >= 3
    });
    assert!(proxy.is_running(), "{}", proxy.stderr());

    // The store is up but the cluster is not initialised: still not ready.
    etcd.start_again();
    notify.wait_for("the no-clusterdata status", |l| {
        l.starts_with("STATUS=") && l.contains("no clusterdata")
    });
    assert_eq!(notify.first(|l| l == "READY=1"), None);

    let init_at = Instant::now();
    ctl(&etcd, CLUSTER, &["init", "-y"], None);
    let ready_at = notify.wait_for("READY=1", |l| l == "READY=1");
    assert!(ready_at > init_at, "READY=1 before clusterdata existed");
    // Ready means listening: no master yet, so the client is accepted, held for one (5 s by
    // default, --hold-timeout) and closed.
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("ready but not listening");
    c.set_read_timeout(Some(DEADLINE)).unwrap();
    assert!(matches!(c.read(&mut [0u8; 8]), Ok(0) | Err(_)));
    let status = notify
        .assignments()
        .into_iter()
        .rev()
        .find(|(_, l)| l.starts_with("STATUS="))
        .unwrap()
        .1;
    assert!(
        status.starts_with("STATUS=no master: holding new clients up to 5s (no master elected"),
        "{status}"
    );

    // At least two pings per watchdog period, although a check runs only every 5 s.
    wait_until(DEADLINE, "pings over two watchdog periods", || {
        pings_after(&notify, ready_at).len() >= 9
    });
    let pings = pings_after(&notify, ready_at);
    assert_twice_per_period(&pings, WATCHDOG);

    // SIGHUP re-reads the file: the log level goes from warn to info.
    assert!(
        !proxy.stderr().contains("proxy starting"),
        "info logged at warn"
    );
    std::fs::write(&config, "log-level = \"info\"\n").unwrap();
    proxy.signal(Signal::SIGHUP);
    wait_until(DEADLINE, "the reload logged at info", || {
        proxy.stderr().contains("configuration reloaded on SIGHUP")
    });
    notify.wait_for("RELOADING=1", |l| l == "RELOADING=1");
    wait_until(DEADLINE, "READY=1 after the reload", || {
        notify.count("READY=1") == 2
    });

    proxy.signal(Signal::SIGTERM);
    let exit = proxy.wait_exit();
    assert!(exit.success(), "{exit:?}: {}", proxy.stderr());
    let stopping = notify.wait_for("STOPPING=1", |l| l == "STOPPING=1");
    assert!(stopping > ready_at);
}

/// A stand-in PostgreSQL: answers a client's first byte with `A`, then echoes.
fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut first = [0u8; 1];
                if s.read_exact(&mut first).is_ok() && s.write_all(b"A").is_ok() {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                }
            });
        }
    });
    addr
}

fn write_cluster_data(etcd: &Etcd, cd: &ClusterData) {
    let json = serde_json::to_string(cd).unwrap();
    ctl(etcd, CLUSTER, &["clusterdata", "write", "-y"], Some(&json));
}

fn cluster_data_with_master(addr: SocketAddr) -> ClusterData {
    let mut cd: ClusterData = serde_json::from_str(
        r#"{"formatVersion":1,"cluster":{"uid":"c1","generation":1,"spec":{"initMode":"new"},"status":{}},
            "proxy":{"generation":1,"spec":{}}}"#,
    )
    .unwrap();
    let mut db = Db {
        uid: "dba".into(),
        ..Default::default()
    };
    db.status.listen_address = addr.ip().to_string();
    db.status.port = addr.port().to_string();
    cd.dbs.insert("dba".into(), db);
    cd.proxy.spec.master_db_uid = "dba".into();
    cd
}

fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    matches!(s.read(&mut [0u8; 8]), Ok(0) | Err(_))
}

#[test]
fn socket_activated_proxy_serves_its_first_client_from_the_master() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start();
    let master = backend();
    let mut cd = cluster_data_with_master(master);
    write_cluster_data(&etcd, &cd);
    let notify = NotifySocket::bind();
    let port = free_port();
    // --port names a port in use: the proxy must not try to bind it when handed a socket.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();

    let mut cmd = Command::new("/usr/bin/systemd-socket-activate");
    clean_env(&mut cmd);
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify.path.display()))
        .arg(format!("--setenv=WATCHDOG_USEC={}", WATCHDOG.as_micros()))
        .arg(&*PROXY)
        .args(proxy_args(&etcd, taken_port))
        // Upstream's behaviour, checked below: no master, clients closed at once.
        .arg("--hold-timeout=0");
    let mut proxy = Running::spawn(cmd, &dir.path().join("stderr"));

    // The first connection makes systemd-socket-activate start the proxy on its socket.
    let mut first = None;
    wait_until(DEADLINE, "systemd-socket-activate listening", || {
        first = TcpStream::connect(("127.0.0.1", port)).ok();
        first.is_some()
    });
    let mut first = first.unwrap();
    // PostgreSQL clients speak first; the proxy dials the master only then.
    first.write_all(b"?").unwrap();

    // Play the sentinel: enable the new proxy once it announced itself.
    enable_proxy(&etcd, &mut cd);
    assert!(proxy.is_running(), "{}", proxy.stderr());

    // The client that started the proxy waited in the backlog and now reaches the master.
    first.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut greeting = [0u8; 1];
    first
        .read_exact(&mut greeting)
        .unwrap_or_else(|e| panic!("first client not served: {e}; {}", proxy.stderr()));
    assert_eq!(&greeting, b"A");
    first.write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    first.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping");
    notify.wait_for("READY=1", |l| l == "READY=1");
    notify.wait_for("the routing status", |l| {
        l.starts_with(&format!("STATUS=routing to {master}"))
    });

    // No master: the activated socket stays open, clients are accepted and closed at once.
    cd.proxy.spec.master_db_uid = Default::default();
    cd.proxy.generation.bump();
    write_cluster_data(&etcd, &cd);
    assert!(closed(&mut first), "session kept without a master");
    notify.wait_for("the no-master status", |l| {
        l.starts_with("STATUS=no master: refusing connections")
    });
    let mut late = TcpStream::connect(("127.0.0.1", port)).expect("activated socket closed");
    assert!(closed(&mut late));

    proxy.signal(Signal::SIGTERM);
    let exit = proxy.wait_exit();
    assert!(exit.success(), "{exit:?}: {}", proxy.stderr());
    notify.wait_for("STOPPING=1", |l| l == "STOPPING=1");
    drop(taken);
}

/// Plays the sentinel: waits for the proxy's info in etcd, then enables it.
fn enable_proxy(etcd: &Etcd, cd: &mut ClusterData) {
    let prefix = format!("stolon/cluster/{CLUSTER}/proxies/info/");
    let mut keys = Vec::new();
    wait_until(DEADLINE, "the proxy's info in etcd", || {
        keys = etcd.keys(&prefix);
        !keys.is_empty()
    });
    cd.proxy.spec.enabled_proxies = vec![keys[0].trim_start_matches(&prefix).to_string()];
    cd.proxy.generation.bump();
    write_cluster_data(etcd, cd);
}

/// systemd gives a service a soft open-file limit of 1024: the proxy raises it to the hard
/// limit, so 1,500 idle clients (about 1,500 descriptors) leave a fresh client served.
#[test]
fn proxy_raises_the_soft_open_file_limit_systemd_gives_it() {
    const IDLE: usize = 1500;
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start();
    let master = backend();
    let mut cd = cluster_data_with_master(master);
    write_cluster_data(&etcd, &cd);
    let port = free_port();
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= 4 * IDLE as u64,
        "the hard open-file limit ({hard}) is too low for this test"
    );
    let mut cmd = Command::new("prlimit");
    clean_env(&mut cmd);
    cmd.arg(format!("--nofile=1024:{hard}"))
        .arg("--")
        .arg(&*PROXY)
        .args(proxy_args(&etcd, port));
    let proxy = Running::spawn(cmd, &dir.path().join("stderr"));
    enable_proxy(&etcd, &mut cd);
    let served = |s: &mut TcpStream| {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut greeting = [0u8; 1];
        s.write_all(b"?").is_ok() && s.read_exact(&mut greeting).is_ok() && &greeting == b"A"
    };
    wait_until(DEADLINE, "the proxy routing to the master", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| served(&mut s))
    });

    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| {
            TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("client {i}: {e}; {}", proxy.stderr()))
        })
        .collect();
    let mut fresh = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(
        served(&mut fresh),
        "fresh client not served: {}",
        proxy.stderr()
    );
    assert!(
        !proxy.stderr().contains("accepting clients failed"),
        "{}",
        proxy.stderr()
    );
    drop(idle);
}
