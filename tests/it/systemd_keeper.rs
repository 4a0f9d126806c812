//! The keeper binary under a fake service manager: a Unix datagram socket bound by the test is
//! its NOTIFY_SOCKET, with WATCHDOG_USEC set, next to a real etcd, a real sentinel and
//! PostgreSQL 15. Checks READY=1 only once PostgreSQL accepts connections (and only from the
//! keeper: PostgreSQL must not see NOTIFY_SOCKET), the STATUS lines, EXTEND_TIMEOUT_USEC during
//! initdb, the watchdog period taken from the cluster spec (WATCHDOG_USEC=, the rule of
//! src/cluster/fencing.rs) and WATCHDOG=1 at least twice per period, STOPPING=1 and exit status
//! 0 on SIGTERM, and no PostgreSQL process left. As root the keeper runs as `postgres`.

use crate::support;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::procs::{Proc, RunAs};
use support::{Etcd, free_port, pg_bin, wait_until, write_secret};

/// What the "unit" sets; the keeper replaces it with SPEC_WATCHDOG once it reads the spec.
const WATCHDOG: Duration = Duration::from_secs(3);
/// sleepInterval 1s, failInterval 4s: fenced 3 s after a publication, publications every 1 s.
const SPEC_WATCHDOG: Duration = Duration::from_secs(2);
const DEADLINE: Duration = Duration::from_secs(120);

/// Kills whatever postgres runs in `pgdata` when the test ends (postgres has its own process
/// group, so the keeper's group kill misses it).
struct PgdataGuard(PathBuf);

impl Drop for PgdataGuard {
    fn drop(&mut self) {
        for pid in processes_in(&self.0) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Live processes whose working directory is `dir` (postgres enters PGDATA).
fn processes_in(dir: &Path) -> Vec<i32> {
    let Ok(dir) = fs::canonicalize(dir) else {
        return Vec::new();
    };
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == dir)
                && !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))
                })
        })
        .collect()
}

/// One datagram the keeper sent, when it arrived, and for READY=1 whether PostgreSQL accepted
/// connections right then.
#[derive(Debug, Clone)]
struct Msg {
    at: Instant,
    text: String,
    pg_accepting: Option<bool>,
}

/// The test's end of NOTIFY_SOCKET, read by a thread.
struct NotifySocket {
    path: PathBuf,
    msgs: Arc<Mutex<Vec<Msg>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl NotifySocket {
    fn bind(path: PathBuf, pg_port: u16) -> NotifySocket {
        let sock = UnixDatagram::bind(&path).unwrap();
        // The keeper may run as another user: it needs write permission to send.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (msgs.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while !s.load(Ordering::SeqCst) {
                let Ok(n) = sock.recv(&mut buf) else {
                    continue;
                };
                let at = Instant::now();
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let pg_accepting = text
                    .lines()
                    .any(|l| l == "READY=1")
                    .then(|| pg_isready(pg_port));
                m.lock().unwrap().push(Msg {
                    at,
                    text,
                    pg_accepting,
                });
            }
        });
        NotifySocket {
            path,
            msgs,
            stop,
            reader: Some(reader),
        }
    }

    fn all(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    fn with(&self, field: &str) -> Vec<Msg> {
        self.all()
            .into_iter()
            .filter(|m| m.text.lines().any(|l| l == field || l.starts_with(field)))
            .collect()
    }

    fn statuses(&self) -> Vec<String> {
        self.all()
            .iter()
            .flat_map(|m| m.text.lines().map(str::to_string).collect::<Vec<_>>())
            .filter_map(|l| l.strip_prefix("STATUS=").map(str::to_string))
            .collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn pg_isready(port: u16) -> bool {
    Command::new(format!("{}/pg_isready", pg_bin()))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "2"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What every keeper of the test shares.
struct Ctx {
    base: PathBuf,
    store_args: Vec<String>,
    pw: PathBuf,
    user: RunAs,
}

/// A keeper process with its own notify socket. Field order matters for drop: the keeper goes
/// first, then any postgres left in its data dir.
struct KeeperRun {
    proc: Proc,
    _pg: PgdataGuard,
    notify: NotifySocket,
    dir: PathBuf,
    log: PathBuf,
}

impl Ctx {
    fn start_keeper(&self, uid: &str, pg_port: u16) -> KeeperRun {
        let dir = self.base.join(uid);
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        self.user.chown(&dir);
        let notify = NotifySocket::bind(self.base.join(format!("{uid}.notify")), pg_port);
        let mut cmd = Command::new(&*support::KEEPER);
        cmd.args(&self.store_args)
            .args(["--uid", uid, "--data-dir"])
            .arg(&dir)
            .args(["--pg-listen-address", "127.0.0.1", "--pg-port"])
            .arg(pg_port.to_string())
            .args(["--pg-bin-path", &pg_bin()])
            .args([
                "--pg-su-username",
                "postgres",
                "--pg-repl-username",
                "postgres",
            ])
            .arg("--pg-su-passwordfile")
            .arg(&self.pw)
            .arg("--pg-repl-passwordfile")
            .arg(&self.pw)
            .current_dir(&dir)
            .env("HOME", &dir)
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string());
        let log = self.base.join(format!("{uid}.log"));
        KeeperRun {
            proc: Proc::spawn(uid, cmd, &log, self.user),
            _pg: PgdataGuard(dir.join("postgres")),
            notify,
            dir,
            log,
        }
    }
}

#[test]
fn keeper_speaks_the_systemd_notify_protocol() {
    let dir = tempfile::Builder::new()
        .prefix("stolon-sd-keeper-")
        .tempdir()
        .unwrap();
    let base = dir.path().to_path_buf();
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
    let user = RunAs::keeper_user();
    let pg_port = free_port();
    let etcd = Etcd::start_in(&base, None);
    let store_args = etcd.store_flags("sdtest");
    let spec = base.join("spec.json");
    fs::write(
        &spec,
        r#"{"initMode":"new","sleepInterval":"1s","requestTimeout":"4s","failInterval":"4s",
            "dbWaitReadyTimeout":"30s","initTimeout":"90s"}"#,
    )
    .unwrap();
    let mut sentinel_cmd = Command::new(&*support::SENTINEL);
    sentinel_cmd
        .args(&store_args)
        .arg("--initial-cluster-spec")
        .arg(&spec);
    let _sentinel = Proc::spawn(
        "sentinel",
        sentinel_cmd,
        &base.join("sentinel.log"),
        RunAs::Me,
    );

    let pw = base.join("su-password");
    write_secret(&pw, "supass", user);
    let ctx = Ctx {
        base: base.clone(),
        store_args,
        pw,
        user,
    };

    let mut k0 = ctx.start_keeper("keeper0", pg_port);
    let (notify, kdir, keeper_log) = (&k0.notify, k0.dir.clone(), k0.log.clone());
    let log = || fs::read_to_string(&keeper_log).unwrap_or_default();
    let keeper = &mut k0.proc;

    let start = Instant::now();
    while notify.with("READY=1").is_empty() {
        assert!(
            start.elapsed() < DEADLINE,
            "no READY=1; statuses {:?}\nkeeper log:\n{}",
            notify.statuses(),
            log()
        );
        assert!(!keeper.exited(), "keeper exited:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready = notify.with("READY=1")[0].clone();
    assert_eq!(
        ready.pg_accepting,
        Some(true),
        "READY=1 before PostgreSQL accepted connections: {ready:?}"
    );
    assert!(
        ready.text.contains("STATUS=master of db "),
        "READY=1 carries the state: {ready:?}"
    );
    let before_ready: Vec<Msg> = notify
        .all()
        .into_iter()
        .filter(|m| m.at < ready.at)
        .collect();
    assert!(
        before_ready
            .iter()
            .any(|m| m.text.contains("STATUS=initdb…") && m.text.contains("EXTEND_TIMEOUT_USEC=")),
        "initdb extends the start timeout: {before_ready:?}"
    );

    // The watchdog, over a few periods after READY=1, at the period the spec asks for.
    let asked = notify.with("WATCHDOG_USEC=");
    assert!(
        asked.iter().any(|m| m
            .text
            .contains(&format!("WATCHDOG_USEC={}", SPEC_WATCHDOG.as_micros()))),
        "the keeper sets its watchdog period from the spec: {asked:?}"
    );
    let window = SPEC_WATCHDOG * 4;
    wait_until(window * 2, "the watchdog window", || {
        ready.at.elapsed() > window + SPEC_WATCHDOG / 2
    });
    let pings: Vec<Instant> = notify
        .with("WATCHDOG=1")
        .iter()
        .map(|m| m.at)
        .filter(|at| *at >= ready.at && *at <= ready.at + window)
        .collect();
    assert!(
        pings.len() >= 2 * 4 - 1,
        "at least 2 pings per {SPEC_WATCHDOG:?}: {} in {window:?}",
        pings.len()
    );
    support::systemd::assert_twice_per_period(&pings, SPEC_WATCHDOG);
    assert!(
        notify
            .statuses()
            .iter()
            .any(|s| s.starts_with("master of db ") && s.ends_with(", no standby streaming")),
        "status with the replication state: {:?}",
        notify.statuses()
    );

    // A standby: pg_basebackup with its progress in STATUS, READY=1 once it accepts
    // connections, the replication state in both status lines.
    let mut k1 = ctx.start_keeper("keeper1", free_port());
    let k1_log = || fs::read_to_string(&k1.log).unwrap_or_default();
    let start = Instant::now();
    while k1.notify.with("READY=1").is_empty() {
        assert!(
            start.elapsed() < DEADLINE,
            "no READY=1 from the standby; statuses {:?}\nkeeper log:\n{}",
            k1.notify.statuses(),
            k1_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let ready1 = k1.notify.with("READY=1")[0].clone();
    assert_eq!(ready1.pg_accepting, Some(true), "{ready1:?}");
    assert!(
        ready1
            .text
            .contains("STATUS=standby following keeper0 (db "),
        "{ready1:?}"
    );
    let statuses1 = k1.notify.statuses();
    assert!(
        statuses1
            .iter()
            .any(|s| s.starts_with("pg_basebackup ") && s.contains(" / ")),
        "pg_basebackup progress in STATUS: {statuses1:?}"
    );
    assert!(
        k1.notify
            .with("EXTEND_TIMEOUT_USEC=")
            .iter()
            .any(|m| m.text.contains("STATUS=pg_basebackup") && m.at < ready1.at),
        "pg_basebackup extends the start timeout: {:?}",
        k1.notify.all()
    );
    wait_until(DEADLINE, "the standby's replay lag in STATUS", || {
        k1.notify
            .statuses()
            .iter()
            .any(|s| s.starts_with("standby following keeper0") && s.contains(", replay lag "))
    });
    wait_until(DEADLINE, "the master's status counting the standby", || {
        notify
            .statuses()
            .iter()
            .any(|s| s.starts_with("master of db ") && s.ends_with(", 1 standby streaming"))
    });
    kill(Pid::from_raw(k1.proc.pid()), Signal::SIGTERM).unwrap();
    let st1 = k1.proc.wait_exit(DEADLINE).expect("standby keeper exits");
    assert!(st1.success(), "standby keeper exit {st1}:\n{}", k1_log());
    assert_eq!(processes_in(&k1.dir.join("postgres")), Vec::<i32>::new());

    // SIGTERM: STOPPING=1, exit 0, PostgreSQL stopped.
    let postmaster = fs::read_to_string(kdir.join("postgres/postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
        .expect("postmaster.pid while the master runs");
    kill(Pid::from_raw(keeper.pid()), Signal::SIGTERM).unwrap();
    let status = keeper
        .wait_exit(DEADLINE)
        .unwrap_or_else(|| panic!("keeper did not exit on SIGTERM:\n{}", log()));
    assert!(status.success(), "keeper exit {status}:\n{}", log());
    assert!(
        !notify.with("STOPPING=1").is_empty(),
        "STOPPING=1 on SIGTERM: {:?}",
        notify.all()
    );
    assert!(
        !Path::new(&format!("/proc/{postmaster}")).exists()
            || processes_in(&kdir.join("postgres")).is_empty(),
        "postmaster {postmaster} still running"
    );
    assert_eq!(
        processes_in(&kdir.join("postgres")),
        Vec::<i32>::new(),
        "PostgreSQL processes left"
    );

    // The keeper's SQL connections end cleanly, and postgres's lines keep their severity.
    let (l0, l1) = (log(), k1_log());
    for cut in [
        "could not receive data from client",
        "connection to client lost",
    ] {
        assert!(!l0.contains(cut) && !l1.contains(cut), "{cut}:\n{l0}\n{l1}");
    }
    assert!(
        l0.lines().any(
            |l| l.contains("LOG:  database system is ready to accept connections")
                && l.contains("INFO")
        ),
        "postgres LOG lines at info:\n{l0}"
    );

    // Only the keeper talks to systemd: PostgreSQL (built with systemd support) would send its
    // own bare READY=1 / STOPPING=1 if it inherited NOTIFY_SOCKET.
    assert_eq!(notify.with("READY=1").len(), 1, "{:?}", notify.all());
    for m in notify
        .with("READY=1")
        .iter()
        .chain(&notify.with("STOPPING=1"))
    {
        assert!(m.text.contains("STATUS="), "not from the keeper: {m:?}");
    }
}
