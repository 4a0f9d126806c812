//! Child processes owned by a test: own process group, output to a log file, SIGKILL on drop.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Gid, Pid, Uid, User, chown, getpgid};
use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Which OS user a child runs as. PostgreSQL (and so our keeper) refuses to run as root, so
/// when the tests run as root the keepers run as `postgres`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunAs {
    Me,
    User { uid: u32, gid: u32 },
}

impl RunAs {
    pub(crate) fn keeper_user() -> RunAs {
        if !Uid::effective().is_root() {
            return RunAs::Me;
        }
        let (uid, gid) = match User::from_name("postgres") {
            Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
            _ => (101, 104),
        };
        RunAs::User { uid, gid }
    }

    /// A data directory this user owns, as the crate's postgres toolkit takes it.
    pub(crate) fn pgdata(self, path: impl Into<std::path::PathBuf>) -> stolon::postgres::Pgdata {
        use stolon::postgres::Pgdata;
        match self {
            RunAs::Me => Pgdata::new(path),
            RunAs::User { uid, gid } => {
                Pgdata::owned_by(path, stolon::postgres::RunAs { uid, gid })
            }
        }
    }

    pub(crate) fn chown(&self, path: &Path) {
        if let RunAs::User { uid, gid } = *self {
            chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).unwrap();
        }
    }
}

pub(crate) struct Proc {
    child: Child,
}

impl Proc {
    /// Spawns `cmd` in a new process group, stdout+stderr appended to `log`. The child also gets
    /// SIGKILL if the spawning test thread dies without running drop (e.g. the runner kills it).
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path, run_as: RunAs) -> Proc {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let err = out.try_clone().unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // The runner's own NOTIFY_SOCKET is not for the children; one the test set (playing
        // systemd) is.
        if !cmd
            .get_envs()
            .any(|(k, v)| k == "NOTIFY_SOCKET" && v.is_some())
        {
            cmd.env_remove("NOTIFY_SOCKET");
        }
        if let RunAs::User { uid, gid } = run_as {
            cmd.uid(uid).gid(gid);
        }
        // SAFETY: prctl is async-signal-safe; nothing is allocated between fork and exec here.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL)).map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        Proc { child }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether it has exited (reaping it if so).
    pub(crate) fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for it to exit; `None` if it is still running then.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL to the whole process group, then reap the leader.
    pub(crate) fn kill(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `sig` to the whole process group (e.g. SIGSTOP/SIGCONT).
    pub(crate) fn signal_group(&self, sig: Signal) {
        let _ = killpg(Pid::from_raw(self.pid()), sig);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The postmaster pid from `<pgdata>/postmaster.pid`, if the file exists and names a live postgres.
pub(crate) fn postmaster_pid(pgdata: &Path) -> Option<i32> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    is_postgres(pid).then_some(pid)
}

/// Guards against pid reuse: only a live process whose command is postgres counts.
fn is_postgres(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("postgres"))
        .unwrap_or(false)
}

/// SIGKILLs the postmaster of `pgdata` (and its group when it leads one, so no backend keeps the
/// shared memory), then waits until it is gone. `known` is a pid read before its keeper died.
pub(crate) fn kill_postmaster(pgdata: &Path, known: Option<i32>) {
    let pids: Vec<i32> = known
        .into_iter()
        .chain(postmaster_pid(pgdata))
        .filter(|p| is_postgres(*p))
        .collect();
    for pid in &pids {
        let p = Pid::from_raw(*pid);
        if getpgid(Some(p)) == Ok(p) {
            let _ = killpg(p, Signal::SIGKILL);
        }
        let _ = kill(p, Signal::SIGKILL);
    }
    let start = Instant::now();
    while pids.iter().any(|p| is_live(*p)) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Alive and not a zombie.
fn is_live(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Sends `sig` to one process (e.g. SIGSTOP to a walreceiver to make a standby lag).
pub(crate) fn signal_pid(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("signal {sig} to pid {pid}: {e}"));
}

/// Kills the postgres instances left behind by earlier test processes that died without running
/// their drop (SIGKILLed by a runner: their keepers die with them through the parent-death
/// signal, but a postgres in its own process group survives). Only postmasters whose command
/// line names a data dir inside a `stolon-it-*` dir whose owning test process is gone are
/// touched.
pub(crate) fn reap_orphans_of_dead_tests(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for dir in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        let is_ours = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("stolon-it-"));
        let owner = fs::read_to_string(dir.join("owner.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        let Some(owner) = owner.filter(|_| is_ours) else {
            continue;
        };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let Ok(kdirs) = fs::read_dir(&dir) else {
            continue;
        };
        for pgdata in kdirs
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("postgres"))
        {
            let Some(pid) = postmaster_pid(&pgdata) else {
                continue;
            };
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*pgdata.to_string_lossy()) {
                kill_postmaster(&pgdata, Some(pid));
            }
        }
    }
}
