//! postgres as a child process of the keeper (no `pg_ctl start`): its own process group (a
//! Ctrl-C on the keeper's terminal must not reach it: the keeper decides how it stops), no
//! systemd service environment (with `NOTIFY_SOCKET` it would talk to systemd as if it were the
//! keeper), its output forwarded line by line to tracing (target `postgres`, level from the
//! line's severity), readiness read from `postmaster.pid`.
//!
//! PostgreSQL never outlives its keeper: the postmaster gets SIGQUIT (an immediate shutdown,
//! which ends every backend at once) when the keeper dies. That parent-death signal follows the
//! *thread* that forked the child, so every postmaster is forked by one thread that lives as
//! long as the process ([`spawn_postmaster`]), never by a tokio worker or blocking-pool thread
//! that may come and go.

use super::logline::{PgLevel, forward, line_level};
use super::{PgBinaries, PgError, Pgdata};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const POLL: Duration = Duration::from_millis(50);
/// Lines of postgres output kept to explain an unexpected exit.
const TAIL_LINES: usize = 20;
/// How long the postmaster gets after SIGQUIT before everything is SIGKILLed, and after the
/// SIGKILL (less when the stop's total is short: `escalation`).
const IMMEDIATE_GRACE: Duration = Duration::from_secs(5);

/// How to start postgres.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// `-c config_file=…`; `None` uses `<pgdata>/postgresql.conf`.
    pub config_file: Option<PathBuf>,
    /// Also passed as `-c unix_socket_directories=…`, so the keeper can always connect even with
    /// a config file that says otherwise.
    pub socket_dir: PathBuf,
    /// Deadline for the postmaster to be up (dbWaitReadyTimeout).
    pub timeout: Duration,
}

/// `postmaster.pid` line 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PmStatus {
    Starting,
    Stopping,
    /// Accepting connections.
    Ready,
    /// A standby not (yet) accepting connections: not consistent yet, or hot_standby off.
    Standby,
}

/// A running postmaster we started. Dropping it SIGKILLs all its processes: a postgres the
/// keeper no longer tracks must not keep accepting writes.
#[derive(Debug)]
pub struct PgProcess {
    child: tokio::process::Child,
    pid: i32,
    pgdata: PathBuf,
    tail: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<JoinHandle<()>>,
    exited: bool,
}

impl PgProcess {
    /// Spawns `postgres -D <pgdata> -c unix_socket_directories=<dir> [-c config_file=<f>]` and
    /// waits until `postmaster.pid` carries its pid with status `ready` or `standby` (a standby
    /// that is not consistent yet is up but not accepting connections; see
    /// [`PgProcess::wait_ready`]). Fails early with "postgres exited unexpectedly: <last lines>"
    /// if the child dies, and after `opts.timeout` (the child is then killed).
    pub async fn start(
        bins: &PgBinaries,
        pgdata: &Pgdata,
        opts: &StartOptions,
    ) -> Result<PgProcess, PgError> {
        let run_as = pgdata.owner();
        // Canonical: instance processes are recognised by their working directory.
        let pgdata = std::fs::canonicalize(pgdata).map_err(|e| PgError::io(pgdata.path(), e))?;
        remove_stale_lock_file(&pgdata);
        remove_stale_socket_locks(&opts.socket_dir);
        let mut cmd = tokio::process::Command::new(&bins.postgres);
        cmd.arg("-D").arg(&pgdata).arg("-c").arg(format!(
            "unix_socket_directories={}",
            opts.socket_dir.display()
        ));
        if let Some(conf) = &opts.config_file {
            cmd.arg("-c").arg(format!("config_file={}", conf.display()));
        }
        super::without_private_env(&mut cmd)
            .current_dir(&pgdata)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(r) = run_as {
            cmd.uid(r.uid).gid(r.gid);
        }
        let mut child = spawn_postmaster(cmd)
            .await
            .map_err(|source| PgError::Spawn {
                program: bins.postgres.display().to_string(),
                source,
            })?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(forward_lines(out, pid, tail.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(forward_lines(err, pid, tail.clone()));
        }
        let mut proc = PgProcess {
            child,
            pid,
            pgdata,
            tail,
            readers,
            exited: false,
        };
        proc.wait_status(
            opts.timeout,
            &[PmStatus::Ready, PmStatus::Standby],
            "postgres start",
        )
        .await?;
        tracing::info!(pid, pgdata = %proc.pgdata.display(), "postgres started");
        Ok(proc)
    }

    /// The postmaster's pid.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    /// Waits until postgres accepts connections (`postmaster.pid` status `ready`).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), PgError> {
        self.wait_status(timeout, &[PmStatus::Ready], "postgres ready")
            .await
    }

    async fn wait_status(
        &mut self,
        timeout: Duration,
        wanted: &[PmStatus],
        what: &str,
    ) -> Result<(), PgError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Err(PgError::ExitedUnexpectedly(self.exit_report(&status).await));
            }
            if let Some((pid, st)) = read_postmaster_pid(&self.pgdata)
                && pid == self.pid
                && wanted.contains(&st)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill_group();
                return Err(PgError::Timeout {
                    what: format!("{what} (pid {})", self.pid),
                    after: timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn try_exit_status(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.mark_exited();
                Some(status.to_string())
            }
            Ok(None) => None,
            Err(e) => {
                self.mark_exited();
                Some(e.to_string())
            }
        }
    }

    async fn exit_report(&mut self, status: &str) -> String {
        // Let the readers drain what postgres wrote before dying: it explains why.
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
        }
        let tail = self.tail.lock().map(|t| t.clone()).unwrap_or_default();
        let lines: Vec<String> = tail.into_iter().collect();
        if lines.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {}", lines.join(" | "))
        }
    }

    /// False once the postmaster has exited (it is then reaped).
    pub fn is_running(&mut self) -> bool {
        !self.exited && self.try_exit_status().is_none()
    }

    /// Resolves when the postmaster exits, with a description of why (exit status and its last
    /// output lines). Cancel-safe: meant for `tokio::select!` in the keeper loop.
    pub async fn exited(&mut self) -> String {
        if !self.exited {
            let status = match self.child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            self.mark_exited();
            return self.exit_report(&status).await;
        }
        self.exit_report("exited").await
    }

    /// Fast shutdown: SIGINT (clients disconnected, checkpoint), then an immediate shutdown
    /// (SIGQUIT), then SIGKILL of all its processes, the whole escalation within `total` (split by
    /// `escalation`): a stuck shutdown (e.g. a SIGSTOPped child the postmaster waits for)
    /// costs the caller at most `total`. Always leaves no process behind, or fails after
    /// `total` if even SIGKILL did not end the postmaster.
    pub async fn stop_fast(mut self, total: Duration) -> Result<(), PgError> {
        if !self.is_running() {
            return Ok(());
        }
        let (fast, grace) = escalation(total);
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGINT);
        if self.wait_exit(fast).await {
            tracing::info!(pid = self.pid, "postgres stopped");
            return Ok(());
        }
        tracing::warn!(
            pid = self.pid,
            timeout = ?fast,
            "postgres fast shutdown too slow, doing an immediate shutdown"
        );
        self.quit_then_kill(grace).await
    }

    /// Immediate shutdown (SIGQUIT: every backend ends at once, no checkpoint), then SIGKILL of
    /// all its processes after `grace`: for fencing, where not one more write may be
    /// acknowledged.
    pub async fn stop_immediate(mut self, grace: Duration) -> Result<(), PgError> {
        if !self.is_running() {
            return Ok(());
        }
        self.quit_then_kill(grace).await
    }

    /// SIGQUIT, then after `grace` SIGKILL of every process of the instance, then `grace` for
    /// the kernel to end them.
    async fn quit_then_kill(&mut self, grace: Duration) -> Result<(), PgError> {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGQUIT);
        if self.wait_exit(grace).await {
            tracing::info!(pid = self.pid, "postgres stopped (immediate shutdown)");
            return Ok(());
        }
        tracing::warn!(
            pid = self.pid,
            "postgres immediate shutdown too slow, killing it"
        );
        self.kill_group();
        if self.wait_exit(grace).await {
            Ok(())
        } else {
            Err(PgError::Timeout {
                what: format!("postgres (pid {}) exit after SIGKILL", self.pid),
                after: grace * 2,
            })
        }
    }

    async fn wait_exit(&mut self, timeout: Duration) -> bool {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(_) => {
                self.mark_exited();
                true
            }
            Err(_) => false,
        }
    }

    /// Re-reads postgresql.conf and pg_hba.conf (SIGHUP).
    pub fn reload(&self) -> Result<(), PgError> {
        kill(Pid::from_raw(self.pid), Signal::SIGHUP).map_err(|e| PgError::Unexpected {
            what: "reload signal",
            detail: format!("cannot signal postgres pid {}: {e}", self.pid),
        })
    }

    /// SIGKILLs the postmaster, then every process of this instance. Postgres children call
    /// setsid(), so a process-group kill misses them; they are found by their working
    /// directory, PGDATA, which the postmaster enters before forking anything.
    fn kill_group(&mut self) {
        if !self.exited {
            // Not reaped yet, so the pid is still ours.
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        kill_instance_processes(&self.pgdata);
    }

    /// After the postmaster died (crash, OOM kill), its backends may still serve the clients
    /// they have until they notice: sweep them, a dead postmaster's instance takes no writes.
    /// (The child is reaped already; `kill_group` then only sweeps by working directory.)
    fn mark_exited(&mut self) {
        if !self.exited {
            self.exited = true;
            self.kill_group();
        }
    }
}

impl Drop for PgProcess {
    fn drop(&mut self) {
        if self.is_running() {
            tracing::warn!(
                pid = self.pid,
                "postgres handle dropped while running, killing it"
            );
            self.kill_group();
        }
        for r in &self.readers {
            r.abort();
        }
    }
}

fn forward_lines<R: AsyncRead + Unpin + Send + 'static>(
    stream: R,
    pid: i32,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        let mut level = PgLevel::Info;
        while let Ok(Some(line)) = lines.next_line().await {
            level = line_level(&line, level);
            forward(level, Some(pid), &line);
            if let Ok(mut t) = tail.lock() {
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    })
}

/// Pid (line 1) and status (line 8) from `postmaster.pid`, when present and complete.
fn read_postmaster_pid(pgdata: &Path) -> Option<(i32, PmStatus)> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid: i32 = lines.first()?.trim().parse().ok()?;
    let status = match lines.get(7)?.trim() {
        "starting" => PmStatus::Starting,
        "stopping" => PmStatus::Stopping,
        "ready" => PmStatus::Ready,
        "standby" => PmStatus::Standby,
        _ => return None,
    };
    Some((pid, status))
}

/// At keeper start: stops (fast, then harder, all within `total` as [`PgProcess::stop_fast`])
/// a postmaster left running on `pgdata` by a previous keeper process, so the keeper again owns
/// the only postgres there. Returns whether one was found. A stale `postmaster.pid` whose pid is
/// dead or is not a postgres process is ignored (postgres itself handles it on start).
pub async fn stop_stale_instance(pgdata: &Path, total: Duration) -> Result<bool, PgError> {
    let Some(text) = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok() else {
        return Ok(false);
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return Ok(false);
    };
    if pid <= 0 || !is_live_postgres(pid) {
        return Ok(false);
    }
    tracing::warn!(pid, pgdata = %pgdata.display(), "stopping a postgres left running by a previous keeper");
    let target = Pid::from_raw(pid);
    let (fast, grace) = escalation(total);
    for (signal, wait) in [
        (Signal::SIGINT, fast),
        (Signal::SIGQUIT, grace),
        (Signal::SIGKILL, grace),
    ] {
        let _ = kill(target, signal);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if !is_live_postgres(pid) {
                // After a clean stop nothing is left; after a kill, orphaned backends may be.
                if let Ok(dir) = std::fs::canonicalize(pgdata) {
                    kill_instance_processes(&dir);
                }
                return Ok(true);
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Err(PgError::Timeout {
        what: format!("stop of the stale postgres pid {pid}"),
        after: total,
    })
}

/// Removes a `postmaster.pid` whose pid is not a postgres of this instance. After a host crash
/// the pid it names can belong to any process of the rebooted host, often one of the
/// keeper's own user (its fence guard, say): PostgreSQL then refuses to start ("lock file
/// already exists"), forever. The keeper starts the only postmaster of its PGDATA, and a live
/// one would run in PGDATA, so such a file is stale.
fn remove_stale_lock_file(pgdata: &Path) {
    let lock = pgdata.join("postmaster.pid");
    let Ok(text) = std::fs::read_to_string(&lock) else {
        return;
    };
    let pid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok());
    if !pid.is_some_and(|pid| runs_in(pid, pgdata)) {
        tracing::warn!(pid = ?pid, lock = %lock.display(), "removing a stale postmaster.pid (its pid is no postgres of this data directory)");
        let _ = std::fs::remove_file(&lock);
    }
}

/// Removes the socket lock files (`.s.PGSQL.<port>.lock`, the postmaster's pid on their first
/// line, like `postmaster.pid`) in `socket_dir` whose pid is no live postgres. The same host
/// crash leaves them on disk when the socket directory is persistent (the keeper's default is
/// under its data dir), and a reused pid makes PostgreSQL refuse to start, forever ("lock file
/// ... already exists"; seen in vm-tests' crash_master). A live postgres's lock, another
/// cluster's in a shared directory included, is left alone.
fn remove_stale_socket_locks(socket_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(socket_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(".s.PGSQL.") && name.ends_with(".lock")) {
            continue;
        }
        let lock = entry.path();
        let pid = std::fs::read_to_string(&lock)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
        if !pid.is_some_and(|pid| pid > 0 && is_live_postgres(pid)) {
            tracing::warn!(pid = ?pid, lock = %lock.display(), "removing a stale socket lock file (its pid is no live postgres)");
            let _ = std::fs::remove_file(&lock);
        }
    }
}

/// Splits a stop's total time into the fast-shutdown wait and the wait after each harder
/// signal (SIGQUIT, then SIGKILL): `fast + 2 * grace == total`. The harder steps get
/// [`IMMEDIATE_GRACE`] each, or a quarter of a short total: a postmaster that ignored SIGINT
/// that long is stuck, and after SIGKILL only the kernel's cleanup is left to wait for.
fn escalation(total: Duration) -> (Duration, Duration) {
    let grace = IMMEDIATE_GRACE.min(total / 4);
    (total.saturating_sub(grace * 2), grace)
}

/// SIGKILLs the postmaster `pid` of `pgdata` (if that pid is still a postgres in `pgdata`: it
/// may have been reused) and every other process of that instance. For the fence, which may
/// run in another process than the one that started the postmaster.
pub(crate) fn kill_instance(pid: i32, pgdata: &Path) {
    if runs_in(pid, pgdata) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    kill_instance_processes(pgdata);
}

/// A request to the postmaster-spawning thread.
struct SpawnRequest {
    cmd: tokio::process::Command,
    /// The runtime the child is registered with (its exit is awaited there).
    runtime: tokio::runtime::Handle,
    reply: tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>,
}

/// Forks `cmd` from the one postmaster-spawning thread, with the parent-death signal set (see
/// the module documentation).
async fn spawn_postmaster(
    mut cmd: tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    let keeper = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes two system
    // calls (prctl, getppid); it allocates nothing (errors are raw OS errors) and takes no
    // lock.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGQUIT)?;
            // The keeper may have died between fork and prctl: then no signal will come.
            if nix::unistd::getppid() != keeper {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = SpawnRequest {
        cmd,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    spawner()?
        .send(request)
        .map_err(|_| std::io::Error::other("the postmaster-spawning thread is gone"))?;
    answer
        .await
        .map_err(|_| std::io::Error::other("the postmaster-spawning thread is gone"))?
}

fn spawner() -> std::io::Result<std_mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<std_mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    if let Some(tx) = SPAWNER.get() {
        return Ok(crate::locks::lock(tx).clone());
    }
    let (tx, rx) = std_mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new()
        .name("pg-spawner".into())
        .spawn(move || {
            // Never returns while the process lives: the sender is kept in the static.
            for mut req in rx {
                let _entered = req.runtime.enter();
                let _ = req.reply.send(req.cmd.spawn());
            }
        })?;
    let tx = SPAWNER.get_or_init(|| Mutex::new(tx));
    Ok(crate::locks::lock(tx).clone())
}

/// SIGKILLs every live postgres process whose working directory is `pgdata` (canonical).
fn kill_instance_processes(pgdata: &Path) {
    for pid in instance_processes(pgdata) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Live postgres processes running in `pgdata` (readable for our own user's processes, or all
/// of them as root).
pub(crate) fn instance_processes(pgdata: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| runs_in(pid, pgdata))
        .collect()
}

/// `pid` is a live postgres process of the instance in `pgdata` (canonical): its working
/// directory, which the postmaster enters before forking anything.
fn runs_in(pid: i32, pgdata: &Path) -> bool {
    pid > 0
        && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == pgdata)
        && is_live_postgres(pid)
}

/// The process exists, is not a zombie, and is a postgres.
fn is_live_postgres(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: `pid (comm) state ...`; comm may contain spaces and parentheses.
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let comm = stat
        .find('(')
        .map(|open| &stat[open + 1..close])
        .unwrap_or("");
    let state = stat[close + 1..].trim_start().chars().next();
    comm == "postgres" && !matches!(state, Some('Z') | Some('X'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_postmaster_pid() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_postmaster_pid(dir.path()).is_none());
        std::fs::write(
            dir.path().join("postmaster.pid"),
            "4242\n/data\n1700000000\n5432\n/tmp\n*\n  1234567         0\nready   \n",
        )
        .unwrap();
        assert_eq!(
            read_postmaster_pid(dir.path()),
            Some((4242, PmStatus::Ready))
        );
        std::fs::write(dir.path().join("postmaster.pid"), "4242\n/data\n").unwrap();
        assert!(read_postmaster_pid(dir.path()).is_none());
    }

    #[test]
    fn escalation_fits_in_the_total() {
        let s = Duration::from_secs;
        assert_eq!(escalation(s(30)), (s(20), s(5)));
        assert_eq!(escalation(s(8)), (s(4), s(2)));
        assert_eq!(escalation(Duration::ZERO), (Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn a_lock_file_naming_another_process_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = std::fs::canonicalize(dir.path()).unwrap();
        let lock = pgdata.join("postmaster.pid");
        // Our own pid: alive, but no postgres.
        std::fs::write(
            &lock,
            format!("{}\n{}\n", std::process::id(), pgdata.display()),
        )
        .unwrap();
        remove_stale_lock_file(&pgdata);
        assert!(!lock.exists());
        remove_stale_lock_file(&pgdata);
    }

    #[test]
    fn a_socket_lock_naming_no_live_postgres_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        // Our own pid: alive, and no postgres (a pid reused after a host crash).
        let stale = dir.path().join(".s.PGSQL.5433.lock");
        std::fs::write(&stale, format!("{}\n/var/lib/x\n", std::process::id())).unwrap();
        let other = dir.path().join("unrelated.lock");
        std::fs::write(&other, "1\n").unwrap();
        remove_stale_socket_locks(dir.path());
        assert!(!stale.exists());
        assert!(other.exists(), "only socket lock files are looked at");
        remove_stale_socket_locks(&dir.path().join("missing"));
    }

    #[test]
    fn our_own_process_is_not_postgres() {
        assert!(!is_live_postgres(std::process::id() as i32));
        assert!(!is_live_postgres(i32::MAX));
    }
}
