//! For the systemd tests: a real etcd that can start late, a test notify socket that records
//! every datagram, the real binaries as children killed on drop.
#![allow(dead_code)]

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(30);
pub const PROXY: &str = env!("CARGO_BIN_EXE_stolon-proxy");
pub const CTL: &str = env!("CARGO_BIN_EXE_stolonctl");

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Polls `cond` every 50 ms until it holds; panics with `what` at the deadline.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A single-member etcd on free 127.0.0.1 ports, started on demand; killed on drop.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub endpoint: String,
    peer: String,
}

impl Etcd {
    /// Chooses the ports without starting etcd (to test a store that is down at first).
    pub fn reserve() -> Etcd {
        Etcd {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            endpoint: format!("http://127.0.0.1:{}", free_port()),
            peer: format!("http://127.0.0.1:{}", free_port()),
        }
    }

    pub fn start() -> Etcd {
        let mut e = Etcd::reserve();
        e.run();
        e
    }

    pub fn run(&mut self) {
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.endpoint])
            .args(["--advertise-client-urls", &self.endpoint])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", &format!("t={}", self.peer)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd must be on PATH");
        self.child = Some(child);
        wait_until("etcd healthy", || {
            self.etcdctl(&["endpoint", "health"]).status.success()
        });
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.endpoint, "--command-timeout=2s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.etcdctl(&["get", prefix, "--prefix", "--keys-only"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The store flags every binary takes, for `cluster`.
    pub fn flags(&self, cluster: &str) -> Vec<String> {
        [
            "--cluster-name",
            cluster,
            "--store-backend",
            "etcdv3",
            "--store-endpoints",
            &self.endpoint,
            "--store-timeout",
            "1s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs stolonctl against this etcd; panics when it fails.
    pub fn ctl(&self, cluster: &str, args: &[&str], stdin: Option<&str>) {
        use std::io::Write;
        let mut cmd = Command::new(CTL);
        cmd.args(self.flags(cluster))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        clean_env(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "stolonctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// No role settings or service-manager variables from the caller's environment.
pub fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        let role = ["STKEEPER_", "STSENTINEL_", "STPROXY_", "STOLONCTL_"]
            .iter()
            .any(|p| k.starts_with(p));
        let service = [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "JOURNAL_STREAM",
            "CREDENTIALS_DIRECTORY",
        ]
        .contains(&k.as_str());
        if role || service {
            cmd.env_remove(k);
        }
    }
}

/// A notify socket as systemd binds it: records every datagram with its arrival time.
pub struct NotifySocket {
    pub path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (messages.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    m.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        NotifySocket {
            path,
            messages,
            stop,
            _dir: dir,
        }
    }

    pub fn messages(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// Every `KEY=value` assignment received, in order.
    pub fn assignments(&self) -> Vec<(Instant, String)> {
        self.messages()
            .into_iter()
            .flat_map(|(t, m)| m.lines().map(|l| (t, l.to_string())).collect::<Vec<_>>())
            .collect()
    }

    /// When `line` (a whole assignment such as `READY=1`) first arrived.
    pub fn first(&self, pred: impl Fn(&str) -> bool) -> Option<Instant> {
        self.assignments()
            .into_iter()
            .find(|(_, l)| pred(l))
            .map(|(t, _)| t)
    }

    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> Instant {
        let mut at = None;
        wait_until(what, || {
            at = self.first(&pred);
            at.is_some()
        });
        at.unwrap()
    }

    pub fn count(&self, line: &str) -> usize {
        self.assignments().iter().filter(|(_, l)| l == line).count()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A child process killed (SIGKILL, by its pid) on drop.
pub struct Running {
    pub child: Child,
    pub stderr: PathBuf,
}

impl Running {
    pub fn spawn(mut cmd: Command, stderr: &Path) -> Running {
        let file = std::fs::File::create(stderr).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Running {
            child,
            stderr: stderr.to_path_buf(),
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        wait_until("the process to exit", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
