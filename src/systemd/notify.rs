//! The `sd_notify` datagrams: READY, STATUS, WATCHDOG, STOPPING, RELOADING, EXTEND_TIMEOUT.

use crate::locks::lock;
use sd_notify::NotifyState;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often [`Notifier::long_work`] extends the timeout (at most).
pub const LONG_WORK_STEP: Duration = Duration::from_secs(10);
/// How much time each extension asks for: three steps, so one late step is harmless.
pub const LONG_WORK_EXTEND: Duration = Duration::from_secs(30);

/// Talks to the service manager. Cheap to share (`Arc`) between a role's tasks; every call is a
/// no-op when there is no notify socket, so roles call it unconditionally.
pub struct Notifier {
    target: Option<Target>,
    /// The `WATCHDOG_USEC` period, when systemd asked for pings (a role may change it:
    /// [`Notifier::set_watchdog_period`]).
    watchdog_period: Mutex<Option<Duration>>,
    last_watchdog: Mutex<Option<Instant>>,
    last_status: Mutex<String>,
    ready_sent: AtomicBool,
}

struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC`/`WATCHDOG_PID` (binaries do it through
    /// [`super::service_env`]).
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let watchdog = socket.as_ref().and(sd_notify::watchdog_enabled());
        Notifier::new(socket.as_deref(), watchdog)
    }

    /// A notifier sending to `socket` (a path, or `@name` for the abstract namespace), pinging
    /// the watchdog for a `watchdog_period` when given. Tests use it with their own socket.
    pub fn new(socket: Option<&OsStr>, watchdog_period: Option<Duration>) -> Notifier {
        let target = socket.and_then(|s| match Target::open(s) {
            Ok(t) => Some(t),
            Err(e) => {
                // systemd's start timeout is the backstop: a service that cannot notify fails
                // to start, visibly, rather than us exiting here.
                tracing::warn!(socket = ?s, error = %e, "cannot use NOTIFY_SOCKET; not notifying systemd");
                None
            }
        });
        Notifier {
            watchdog_period: Mutex::new(
                target
                    .as_ref()
                    .and(watchdog_period.filter(|p| !p.is_zero())),
            ),
            target,
            last_watchdog: Mutex::new(None),
            last_status: Mutex::new(String::new()),
            ready_sent: AtomicBool::new(false),
        }
    }

    /// A notifier that never sends anything (tests, foreground runs).
    pub fn disabled() -> Notifier {
        Notifier::new(None, None)
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often a main loop must iterate (and call [`Notifier::watchdog`]) when systemd
    /// watches it: a quarter of `WATCHDOG_USEC`, so that with [`Notifier::watchdog`]'s own
    /// quarter-period spacing two pings are never more than half the period apart.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_period().map(|p| p / 4)
    }

    fn watchdog_period(&self) -> Option<Duration> {
        *lock(&self.watchdog_period)
    }

    /// Asks systemd for a new watchdog period (`WATCHDOG_USEC=`), when it watches this process
    /// at all (a unit with `WatchdogSec=0` stays unwatched). Pings follow the new period at
    /// once.
    pub fn set_watchdog_period(&self, period: Duration) {
        if period.is_zero() {
            return;
        }
        {
            let mut current = lock(&self.watchdog_period);
            if current.is_none_or(|c| c == period) {
                return;
            }
            *current = Some(period);
        }
        let usec = u32::try_from(period.as_micros()).unwrap_or(u32::MAX);
        // A ping first: the new period counts from the last ping.
        self.send(&[NotifyState::Watchdog, NotifyState::WatchdogUsec(usec)]);
        *lock(&self.last_watchdog) = Some(Instant::now());
    }

    /// `normal` shortened to [`Notifier::watchdog_interval`] when that is shorter: the sleep a
    /// main loop takes between iterations.
    pub fn loop_interval(&self, normal: Duration) -> Duration {
        self.watchdog_interval().map_or(normal, |w| normal.min(w))
    }

    /// READY=1 with a status line. Only the first call sends READY=1; later calls only update
    /// the status, so a loop may call it whenever it finds itself ready.
    pub fn ready(&self, status: &str) {
        if self.ready_sent.swap(true, Ordering::SeqCst) {
            return self.status(status);
        }
        self.remember_status(status);
        self.send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
    }

    pub fn is_ready(&self) -> bool {
        self.ready_sent.load(Ordering::SeqCst)
    }

    /// STATUS= only when the text changed, so a loop can call it every iteration.
    pub fn status(&self, status: &str) {
        if self.remember_status(status) {
            self.send(&[NotifyState::Status(&one_line(status))]);
        }
    }

    /// WATCHDOG=1, at most once per quarter period. Call it from the role's main loop, never
    /// from a free-running timer: a loop that stops iterating must get the process restarted.
    pub fn watchdog(&self) {
        let Some(every) = self.watchdog_interval() else {
            return;
        };
        let mut last = lock(&self.last_watchdog);
        if last.is_none_or(|t| t.elapsed() >= every) {
            *last = Some(Instant::now());
            drop(last);
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// EXTEND_TIMEOUT_USEC: asks for `by` more start (or stop) time from now, during long work
    /// such as initdb or a base backup; `status` says what the work is and how far it got. Call
    /// it again before `by` runs out.
    pub fn extend_timeout(&self, by: Duration, status: &str) {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        self.remember_status(status);
        self.send(&[
            NotifyState::ExtendTimeoutUsec(usec),
            NotifyState::Status(&one_line(status)),
        ]);
    }

    /// Awaits long work (initdb, pg_basebackup, PostgreSQL start-up or stop) on the role's main
    /// task: meanwhile, every [`LONG_WORK_STEP`] (or watchdog interval, if shorter), extends
    /// systemd's start/stop timeout by [`LONG_WORK_EXTEND`], pings the watchdog and sets STATUS
    /// to the latest `progress` line (e.g. `pg_basebackup: 1.2 GiB of 4.0 GiB`), or to
    /// `<what> (<n>s)` without one. The pings stop as soon as the work ends or is dropped; the
    /// work itself must be bounded (a timeout) or it keeps the service alive while stuck.
    pub async fn long_work<F: std::future::Future>(
        &self,
        what: &str,
        mut progress: Option<tokio::sync::watch::Receiver<String>>,
        work: F,
    ) -> F::Output {
        let started = Instant::now();
        let step = self.loop_interval(LONG_WORK_STEP);
        tokio::pin!(work);
        loop {
            let line = progress
                .as_mut()
                .map(|p| p.borrow_and_update().clone())
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| format!("{what} ({}s)", started.elapsed().as_secs()));
            self.extend_timeout(LONG_WORK_EXTEND, &line);
            self.watchdog();
            let changed = async {
                match progress.as_mut() {
                    Some(p) => {
                        if p.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                out = &mut work => return out,
                _ = tokio::time::sleep(step) => {}
                _ = changed => {}
            }
        }
    }

    /// RELOADING=1 (with the MONOTONIC_USEC systemd requires); finish with [`Notifier::ready`]
    /// or [`Notifier::reloaded`].
    pub fn reloading(&self) {
        // Before READY=1 systemd is not waiting for a reload, and READY=1 after it would claim a
        // readiness the role has not reached.
        if !self.is_ready() {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the monotonic clock; not sending RELOADING=1")
            }
        }
    }

    /// READY=1 after a reload (sent even when READY=1 was sent before).
    pub fn reloaded(&self) {
        if self.is_ready() {
            self.send(&[NotifyState::Ready]);
        }
    }

    /// STOPPING=1 with a status line.
    pub fn stopping(&self, status: &str) {
        self.remember_status(status);
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status(&one_line(status)),
        ]);
    }

    fn remember_status(&self, status: &str) -> bool {
        let mut last = lock(&self.last_status);
        if *last == status {
            return false;
        }
        *last = status.to_string();
        true
    }

    fn send(&self, states: &[NotifyState]) {
        let Some(target) = &self.target else {
            return;
        };
        let mut msg = String::new();
        for s in states {
            let _ = writeln!(msg, "{s}");
        }
        if let Err(e) = target.socket.send_to_addr(msg.as_bytes(), &target.addr) {
            // Losing a notification is not fatal; systemd's timeouts are the backstop.
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

impl Target {
    fn open(socket: &OsStr) -> std::io::Result<Target> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = socket.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
            None => SocketAddr::from_pathname(OsString::from(socket))?,
        };
        Ok(Target {
            socket: UnixDatagram::unbound()?,
            addr,
        })
    }
}

/// STATUS= is one line; a newline would end the field and start a bogus assignment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    struct Listener {
        _dir: tempfile::TempDir,
        sock: UnixDatagram,
        path: std::path::PathBuf,
    }

    fn listener() -> Listener {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Listener {
            _dir: dir,
            sock,
            path,
        }
    }

    impl Listener {
        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.sock.recv(&mut buf).unwrap();
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }

        fn pending(&self) -> Option<String> {
            self.sock.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 4096];
            let r = self.sock.recv(&mut buf).ok();
            self.sock.set_nonblocking(false).unwrap();
            r.map(|n| String::from_utf8(buf[..n].to_vec()).unwrap())
        }
    }

    #[test]
    fn ready_once_then_status_only_on_change() {
        let l = listener();
        let n = Notifier::new(Some(l.path.as_os_str()), None);
        n.status("starting\nsecond line");
        assert_eq!(l.recv(), "STATUS=starting second line\n");
        n.ready("routing to x");
        assert_eq!(l.recv(), "READY=1\nSTATUS=routing to x\n");
        n.ready("routing to x");
        n.status("routing to x");
        assert_eq!(l.pending(), None);
        n.ready("routing to y");
        assert_eq!(l.recv(), "STATUS=routing to y\n");
        n.stopping("bye");
        assert_eq!(l.recv(), "STOPPING=1\nSTATUS=bye\n");
    }

    #[test]
    fn watchdog_spaced_by_a_quarter_period() {
        let l = listener();
        let n = Notifier::new(Some(l.path.as_os_str()), Some(Duration::from_millis(400)));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(100)));
        assert_eq!(
            n.loop_interval(Duration::from_secs(5)),
            Duration::from_millis(100)
        );
        n.watchdog();
        assert_eq!(l.recv(), "WATCHDOG=1\n");
        n.watchdog();
        assert_eq!(l.pending(), None, "a second ping within the quarter period");
        std::thread::sleep(Duration::from_millis(110));
        n.watchdog();
        assert_eq!(l.recv(), "WATCHDOG=1\n");
    }

    #[test]
    fn extend_timeout_in_microseconds() {
        let l = listener();
        let n = Notifier::new(Some(l.path.as_os_str()), None);
        n.extend_timeout(Duration::from_secs(90), "pg_basebackup: 1 GiB of 4 GiB");
        assert_eq!(
            l.recv(),
            "EXTEND_TIMEOUT_USEC=90000000\nSTATUS=pg_basebackup: 1 GiB of 4 GiB\n"
        );
    }

    #[tokio::test]
    async fn long_work_extends_the_timeout_with_progress_and_pings() {
        let l = listener();
        let n = Notifier::new(Some(l.path.as_os_str()), Some(Duration::from_millis(400)));
        let (tx, rx) = tokio::sync::watch::channel(String::new());
        let work = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send("pg_basebackup: 1 MiB of 2 MiB".into()).unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            7
        };
        assert_eq!(n.long_work("pg_basebackup", Some(rx), work).await, 7);
        let mut got = Vec::new();
        while let Some(m) = l.pending() {
            got.push(m);
        }
        assert!(
            got[0].starts_with("EXTEND_TIMEOUT_USEC=30000000\nSTATUS=pg_basebackup (0s)"),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|m| m.contains("STATUS=pg_basebackup: 1 MiB of 2 MiB")),
            "{got:?}"
        );
        assert!(
            got.iter().filter(|m| *m == "WATCHDOG=1\n").count() >= 2,
            "{got:?}"
        );
    }

    #[test]
    fn disabled_sends_nothing_and_never_asks_for_pings() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        assert_eq!(
            n.loop_interval(Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        n.ready("x");
        n.watchdog();
    }
}
