//! For the systemd tests: a test notify socket that records every datagram, the real binaries
//! as children killed on drop, stolonctl against the test's etcd.

use super::cli::run;
use super::etcd::Etcd;
use super::wait::wait_until;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const DEADLINE: Duration = Duration::from_secs(30);
pub(crate) use super::{CTL, PROXY};
/// `--store-timeout` of the binaries in the systemd tests.
pub(crate) const STORE_TIMEOUT: &str = "1s";

/// Runs stolonctl against `etcd` as `cluster`; panics when it fails.
pub(crate) fn ctl(etcd: &Etcd, cluster: &str, args: &[&str], stdin: Option<&str>) {
    let mut a = etcd.flags(cluster, STORE_TIMEOUT);
    a.extend(args.iter().map(|s| s.to_string()));
    let out = run(&CTL, &a, stdin);
    assert!(
        out.status.success(),
        "stolonctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A notify socket as systemd binds it: records every datagram with its arrival time.
pub(crate) struct NotifySocket {
    pub path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub(crate) fn bind() -> NotifySocket {
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

    pub(crate) fn messages(&self) -> Vec<(Instant, String)> {
        self.messages.lock().unwrap().clone()
    }

    /// Every `KEY=value` assignment received, in order.
    pub(crate) fn assignments(&self) -> Vec<(Instant, String)> {
        self.messages()
            .into_iter()
            .flat_map(|(t, m)| m.lines().map(|l| (t, l.to_string())).collect::<Vec<_>>())
            .collect()
    }

    /// When `line` (a whole assignment such as `READY=1`) first arrived.
    pub(crate) fn first(&self, pred: impl Fn(&str) -> bool) -> Option<Instant> {
        self.assignments()
            .into_iter()
            .find(|(_, l)| pred(l))
            .map(|(t, _)| t)
    }

    pub(crate) fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> Instant {
        let mut at = None;
        wait_until(DEADLINE, what, || {
            at = self.first(&pred);
            at.is_some()
        });
        at.unwrap()
    }

    pub(crate) fn count(&self, line: &str) -> usize {
        self.assignments().iter().filter(|(_, l)| l == line).count()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A child process killed (SIGKILL, by its pid) on drop.
pub(crate) struct Running {
    pub child: Child,
    pub stderr: PathBuf,
}

impl Running {
    pub(crate) fn spawn(mut cmd: Command, stderr: &Path) -> Running {
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

    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub(crate) fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap();
    }

    pub(crate) fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        wait_until(DEADLINE, "the process to exit", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }

    pub(crate) fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts WATCHDOG=1 came at least twice per watchdog period: any window of one period that
/// starts right after a ping still holds the next two.
pub(crate) fn assert_twice_per_period(pings: &[Instant], period: Duration) {
    assert!(pings.len() >= 3, "only {} watchdog pings", pings.len());
    let widest = pings.windows(3).map(|w| w[2] - w[0]).max().unwrap();
    assert!(
        widest <= period,
        "{widest:?} for three consecutive pings, WATCHDOG_USEC is {period:?}"
    );
}
