//! Fencing: a master's PostgreSQL stops taking writes before the sentinel can elect another
//! master, whatever the keeper's loop is doing: stuck in a slow step, frozen (SIGSTOP, a frozen
//! cgroup) or dead.
//!
//! The deadline is `last successful info publication (timed when sent) + fence_after` (the
//! rule is in `src/cluster/fencing.rs`); a clusterdata read proves nothing to the sentinel, so
//! it does not count. Two enforcers watch the same deadline with the same code ([`Enforcer`]):
//! - a thread in the keeper, which does not wait for the loop;
//! - a guard process (this binary started as `stolon-keeper __fence-guard`) fed over a pipe,
//!   which survives a keeper that is stopped, hung or killed. When the pipe closes without the
//!   keeper having said PostgreSQL is stopped (the keeper died), it kills PostgreSQL at once.
//!
//! Either kills the postmaster and every process of its instance (SIGKILL): not one more write
//! is acknowledged. Time is CLOCK_BOOTTIME, which also counts time the machine was suspended.

use crate::postgres::kill_instance;
use nix::time::{ClockId, clock_gettime};
use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The keeper binary's first argument that makes it the guard process.
pub const GUARD_ARG: &str = "__fence-guard";
/// The longest an enforcer sleeps before looking at the clock again: its waits count
/// CLOCK_MONOTONIC, which stops while the machine is suspended.
const RECHECK: Duration = Duration::from_millis(100);

/// A point on CLOCK_BOOTTIME.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct BootInstant(Duration);

impl BootInstant {
    pub(super) fn now() -> BootInstant {
        // CLOCK_BOOTTIME exists on every Linux this runs on; the fallback keeps time moving.
        let ts = clock_gettime(ClockId::CLOCK_BOOTTIME)
            .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
            .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
        BootInstant(Duration::from(ts))
    }

    pub(super) fn saturating_duration_since(self, earlier: BootInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    fn as_nanos(self) -> u128 {
        self.0.as_nanos()
    }

    fn from_nanos(n: u64) -> BootInstant {
        BootInstant(Duration::from_nanos(n))
    }
}

impl std::ops::Add<Duration> for BootInstant {
    type Output = BootInstant;
    fn add(self, d: Duration) -> BootInstant {
        BootInstant(self.0.saturating_add(d))
    }
}

/// The PostgreSQL an enforcer watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Watch {
    pub pid: i32,
    /// Canonical: the instance's processes are found by their working directory.
    pub pgdata: PathBuf,
    /// When it must be dead: set while it runs as master.
    pub deadline: Option<BootInstant>,
}

impl Watch {
    /// One line of the guard protocol: `watch <pid> <deadline ns or -> <pgdata>`.
    fn to_line(&self) -> String {
        let deadline = self
            .deadline
            .map_or_else(|| "-".to_string(), |d| d.as_nanos().to_string());
        format!("watch {} {deadline} {}\n", self.pid, self.pgdata.display())
    }
}

/// Parses one guard protocol line: a [`Watch`], or `none` (nothing to watch).
fn parse_line(line: &str) -> Option<Option<Watch>> {
    if line == "none" {
        return Some(None);
    }
    let rest = line.strip_prefix("watch ")?;
    let (pid, rest) = rest.split_once(' ')?;
    let (deadline, pgdata) = rest.split_once(' ')?;
    let deadline = match deadline {
        "-" => None,
        n => Some(BootInstant::from_nanos(n.parse().ok()?)),
    };
    Some(Some(Watch {
        pid: pid.parse().ok()?,
        pgdata: PathBuf::from(pgdata),
        deadline,
    }))
}

/// What an enforcer does next.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Kill(&'static str),
    /// Look again at this time (`None`: only when told something new).
    WaitUntil(Option<BootInstant>),
    Exit,
}

fn verdict(watch: Option<&Watch>, closed: bool, now: BootInstant) -> Verdict {
    match (watch, closed) {
        (None, true) => Verdict::Exit,
        (Some(_), true) => Verdict::Kill("the keeper is gone"),
        (None, false) => Verdict::WaitUntil(None),
        (Some(w), false) => match w.deadline {
            Some(d) if now >= d => {
                Verdict::Kill("no keeper info published in time while running as master")
            }
            d => Verdict::WaitUntil(d),
        },
    }
}

#[derive(Default)]
struct EnforcerState {
    watch: Option<Watch>,
    /// No more news will come (the keeper shut down, or the guard's pipe closed).
    closed: bool,
}

/// Kills the watched PostgreSQL when its deadline passes or its keeper goes away.
pub(super) struct Enforcer {
    state: Mutex<EnforcerState>,
    /// The postmasters this enforcer killed (the keeper does not count them as crashes).
    killed: Mutex<Vec<i32>>,
    news: Condvar,
    /// Who enforces, for the log line.
    name: &'static str,
    /// The guard process has no tracing subscriber: it writes to stderr.
    to_stderr: bool,
}

impl Enforcer {
    fn new(name: &'static str, to_stderr: bool) -> Arc<Enforcer> {
        Arc::new(Enforcer {
            state: Mutex::new(EnforcerState::default()),
            killed: Mutex::new(Vec::new()),
            news: Condvar::new(),
            name,
            to_stderr,
        })
    }

    fn lock(&self) -> MutexGuard<'_, EnforcerState> {
        crate::locks::lock(&self.state)
    }

    fn set(&self, watch: Option<Watch>) {
        self.lock().watch = watch;
        self.news.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.news.notify_all();
    }

    /// Runs until closed with nothing left to watch.
    fn run(&self) {
        let mut state = self.lock();
        loop {
            let now = BootInstant::now();
            match verdict(state.watch.as_ref(), state.closed, now) {
                Verdict::Exit => return,
                Verdict::Kill(why) => {
                    if let Some(w) = state.watch.take() {
                        drop(state);
                        self.kill(&w, why);
                        state = self.lock();
                    }
                }
                Verdict::WaitUntil(at) => {
                    let wait = at.map_or(RECHECK, |at| at.saturating_duration_since(now));
                    state = self
                        .news
                        .wait_timeout(state, wait.min(RECHECK))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }
        }
    }

    fn kill(&self, w: &Watch, why: &str) {
        let msg = format!(
            "FENCING ({}): killing PostgreSQL (postmaster pid {}, {}): {why}",
            self.name,
            w.pid,
            w.pgdata.display()
        );
        if self.to_stderr {
            eprintln!("stolon-keeper fence guard: {msg}");
        } else {
            tracing::error!("{msg}");
        }
        {
            let mut killed = crate::locks::lock(&self.killed);
            // A few are enough: the keeper asks right after the exit it notices.
            if killed.len() >= 8 {
                killed.remove(0);
            }
            killed.push(w.pid);
        }
        kill_instance(w.pid, &w.pgdata);
    }
}

/// The guard process's main: reads the protocol on stdin and enforces it until stdin closes.
pub fn run_guard() -> std::process::ExitCode {
    let enforcer = Enforcer::new("guard process", true);
    let reader = enforcer.clone();
    let spawned = std::thread::Builder::new()
        .name("fence-guard-in".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                match parse_line(line.trim_end()) {
                    Some(watch) => reader.set(watch),
                    None => eprintln!("stolon-keeper fence guard: ignoring bad line {line:?}"),
                }
            }
            reader.close();
        });
    if let Err(e) = spawned {
        eprintln!("stolon-keeper fence guard: cannot start: {e}");
        return std::process::ExitCode::FAILURE;
    }
    enforcer.run();
    std::process::ExitCode::SUCCESS
}

/// What the keeper knows that the deadline follows.
#[derive(Debug)]
struct Facts {
    pg: Option<(i32, PathBuf)>,
    master: bool,
    last_publication: Option<BootInstant>,
    fence_after: Duration,
}

impl Facts {
    fn watch(&self) -> Option<Watch> {
        let (pid, pgdata) = self.pg.clone()?;
        // A master that never published (cannot happen: the sentinel must have seen this
        // keeper before it runs a db) is already late.
        let deadline = self.master.then(|| {
            self.last_publication
                .map_or_else(BootInstant::now, |t| t + self.fence_after)
        });
        Some(Watch {
            pid,
            pgdata,
            deadline,
        })
    }
}

/// The keeper's side: tells both enforcers what to watch.
pub(super) struct Fence {
    facts: Mutex<Facts>,
    local: Arc<Enforcer>,
    guard: Mutex<Option<Guard>>,
}

struct Guard {
    child: Child,
    stdin: ChildStdin,
}

impl Fence {
    /// Starts the in-process enforcer and, when `guard_program` is given (the keeper binary),
    /// the guard process. A guard that cannot start is reported, and the thread still fences.
    pub(super) fn start(guard_program: Option<&Path>, fence_after: Duration) -> Arc<Fence> {
        let local = Enforcer::new("keeper thread", false);
        let enforcer = local.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("fence".into())
            .spawn(move || enforcer.run())
        {
            tracing::error!(error = %e, "cannot start the fencing thread; the guard process alone fences");
        }
        let guard = guard_program.and_then(|program| match spawn_guard(program) {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::error!(program = %program.display(), error = %e, "cannot start the fence guard process; a frozen keeper will not be fenced without systemd's watchdog");
                None
            }
        });
        Arc::new(Fence {
            facts: Mutex::new(Facts {
                pg: None,
                master: false,
                last_publication: None,
                fence_after,
            }),
            local,
            guard: Mutex::new(guard),
        })
    }

    fn update(&self, f: impl FnOnce(&mut Facts)) {
        let watch = {
            let mut facts = crate::locks::lock(&self.facts);
            let before = facts.watch();
            f(&mut facts);
            let after = facts.watch();
            if before == after {
                return;
            }
            after
        };
        self.local.set(watch.clone());
        self.tell_guard(watch.as_ref());
    }

    fn tell_guard(&self, watch: Option<&Watch>) {
        let mut guard = crate::locks::lock(&self.guard);
        let Some(g) = guard.as_mut() else { return };
        let line = watch.map_or_else(|| "none\n".to_string(), Watch::to_line);
        // Non-blocking: a stuck guard must not hold the keeper (a lost line leaves the guard
        // an older, earlier deadline, or the local thread alone).
        if let Err(e) = g.stdin.write_all(line.as_bytes()) {
            tracing::error!(error = %e, "the fence guard process stopped listening; the keeper thread alone fences from now on");
            *guard = None;
        }
    }

    /// A keeper info publication sent at `sent_at` succeeded.
    pub(super) fn published(&self, sent_at: BootInstant) {
        self.update(|f| {
            if f.last_publication.is_none_or(|t| t < sent_at) {
                f.last_publication = Some(sent_at);
            }
        });
    }

    pub(super) fn set_fence_after(&self, fence_after: Duration) {
        self.update(|f| f.fence_after = fence_after);
    }

    /// The running postmaster (`None` when stopped) and whether it runs as master.
    pub(super) fn watch_postgres(&self, pg: Option<(i32, PathBuf)>, master: bool) {
        self.update(|f| {
            f.master = master && pg.is_some();
            f.pg = pg;
        });
    }

    /// A promotion is about to start: the deadline applies from now on.
    pub(super) fn arm(&self) {
        self.update(|f| f.master = f.pg.is_some());
    }

    /// A stop is about to start (the shutdown refuses new writes at once): no deadline, but
    /// the postmaster is still killed if the keeper dies.
    pub(super) fn disarm(&self) {
        self.update(|f| f.master = false);
    }

    /// Whether the keeper's fence thread killed postmaster `pid` (the guard process, fencing at
    /// the same deadline, may have been first).
    pub(super) fn killed(&self, pid: u32) -> bool {
        let pid = pid as i32;
        crate::locks::lock(&self.local.killed).contains(&pid)
    }

    /// How long since the last successful publication was sent (`None`: never).
    pub(super) fn silent_for(&self) -> Option<Duration> {
        let facts = crate::locks::lock(&self.facts);
        facts
            .last_publication
            .map(|t| BootInstant::now().saturating_duration_since(t))
    }

    /// The store has not taken a publication for longer than `fence_after`: a master must
    /// not run (and the enforcers kill one that does).
    pub(super) fn expired(&self) -> bool {
        !self.fresh_for(Duration::ZERO)
    }

    /// The last publication is recent enough that a master started now keeps running for
    /// at least `left` before its deadline.
    pub(super) fn fresh_for(&self, left: Duration) -> bool {
        let fence_after = crate::locks::lock(&self.facts).fence_after;
        self.silent_for()
            .is_some_and(|s| s.saturating_add(left) <= fence_after)
    }

    /// When the current master deadline expires, from now (`None`: no deadline).
    pub(super) fn deadline_in(&self) -> Option<Duration> {
        let deadline = crate::locks::lock(&self.facts).watch()?.deadline?;
        Some(deadline.saturating_duration_since(BootInstant::now()))
    }

    /// At keeper exit, with PostgreSQL stopped: the enforcers end without killing anything.
    pub(super) fn shutdown(&self) {
        self.watch_postgres(None, false);
        self.local.close();
        let guard = crate::locks::lock(&self.guard).take();
        if let Some(Guard { mut child, stdin }) = guard {
            drop(stdin);
            // It exits at once on EOF with nothing to watch; reap it.
            let _ = child.wait();
        }
    }
}

fn spawn_guard(program: &Path) -> std::io::Result<Guard> {
    let mut cmd = Command::new(program);
    crate::postgres::strip_private_env(&mut cmd);
    let mut child = cmd
        .arg(GUARD_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        // Its own process group: a Ctrl-C meant for the keeper must not end the guard, which
        // outlives the keeper on purpose.
        .process_group(0)
        .spawn()?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no pipe to the guard process"))?;
    let flags = nix::fcntl::fcntl(stdin.as_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(stdin.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(Guard { child, stdin })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn watch(deadline: Option<BootInstant>) -> Watch {
        Watch {
            pid: 4242,
            pgdata: PathBuf::from("/var/lib/stolon/c 1/postgres"),
            deadline,
        }
    }

    #[test]
    fn protocol_lines_round_trip() {
        let t = BootInstant::from_nanos(123_456_789_000);
        for w in [watch(Some(t)), watch(None)] {
            let line = w.to_line();
            assert_eq!(parse_line(line.trim_end()), Some(Some(w)));
        }
        assert_eq!(parse_line("none"), Some(None));
        assert_eq!(parse_line("watch x - /d"), None);
        assert_eq!(parse_line("bogus"), None);
    }

    #[test]
    fn kills_a_master_past_its_deadline_or_when_the_keeper_is_gone() {
        let t0 = BootInstant::from_nanos(1_000_000_000_000);
        let master = watch(Some(t0 + 3 * S));
        assert_eq!(
            verdict(Some(&master), false, t0),
            Verdict::WaitUntil(Some(t0 + 3 * S))
        );
        assert!(matches!(
            verdict(Some(&master), false, t0 + 3 * S),
            Verdict::Kill(_)
        ));
        let standby = watch(None);
        assert_eq!(
            verdict(Some(&standby), false, t0 + 100 * S),
            Verdict::WaitUntil(None),
            "a standby takes no writes: no deadline"
        );
        assert!(matches!(
            verdict(Some(&standby), true, t0),
            Verdict::Kill(_)
        ));
        assert_eq!(verdict(None, true, t0), Verdict::Exit);
        assert_eq!(verdict(None, false, t0), Verdict::WaitUntil(None));
    }

    #[test]
    fn deadline_follows_the_last_publication_only_while_master() {
        let t0 = BootInstant::now();
        let mut f = Facts {
            pg: Some((1, PathBuf::from("/d"))),
            master: false,
            last_publication: Some(t0),
            fence_after: 4 * S,
        };
        assert_eq!(f.watch().and_then(|w| w.deadline), None);
        f.master = true;
        assert_eq!(f.watch().and_then(|w| w.deadline), Some(t0 + 4 * S));
        f.last_publication = None;
        assert!(
            f.watch()
                .and_then(|w| w.deadline)
                .is_some_and(|d| d <= BootInstant::now()),
            "a master that never published is already late"
        );
        f.pg = None;
        assert_eq!(f.watch(), None);
    }

    #[test]
    fn boot_clock_moves_forward() {
        let a = BootInstant::now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(BootInstant::now().saturating_duration_since(a) >= Duration::from_millis(5));
    }
}
