//! Fencing when only the master's keeper fails, its PostgreSQL left running: a client writes
//! directly to every PostgreSQL all along, and the old master's last acknowledged write must
//! come before the first write any other instance acknowledges.
//! - SIGSTOP of the keeper: its fence guard process kills PostgreSQL when the publications stop
//!   (src/keeper/fence.rs), before the sentinel can fail the keeper.
//! - SIGKILL of the keeper: PostgreSQL gets the parent-death signal and the guard, seeing its
//!   pipe close, kills what is left at once.

use crate::support;

use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{Cluster, ClusterBuilder, Session, wait_for, wait_until};

/// Writes to every keeper's PostgreSQL in turn and remembers, per keeper, when writes were
/// acknowledged.
struct Writer {
    sessions: BTreeMap<String, Option<Session>>,
    first_ok: BTreeMap<String, Instant>,
    last_ok: BTreeMap<String, Instant>,
    n: u64,
}

impl Writer {
    fn new(c: &Cluster) -> Writer {
        Writer {
            sessions: c.keepers.keys().map(|k| (k.clone(), None)).collect(),
            first_ok: BTreeMap::new(),
            last_ok: BTreeMap::new(),
            n: 0,
        }
    }

    /// One write to each keeper's PostgreSQL (reconnecting where needed).
    fn round(&mut self, c: &Cluster) {
        for (uid, session) in self.sessions.iter_mut() {
            if session.is_none() {
                *session = c.connect(c.keepers[uid].pg_port).ok();
            }
            let Some(s) = session else { continue };
            self.n += 1;
            let sql = format!("insert into fence_t values ('{uid}', {})", self.n);
            match s.query(&sql) {
                Ok(_) => {
                    let now = Instant::now();
                    self.first_ok.entry(uid.clone()).or_insert(now);
                    self.last_ok.insert(uid.clone(), now);
                }
                // Read-only standby, or a killed instance: reconnect next round.
                Err(_) => *session = None,
            }
        }
    }
}

/// Runs the writer from `fault` on until a keeper other than `old_master` has its writes
/// acknowledged, then checks the old master's last write came first.
fn writes_never_overlap(c: &Cluster, old_master: &str, fault: impl FnOnce()) {
    let mut w = Writer::new(c);
    w.round(c);
    assert!(
        w.last_ok.contains_key(old_master),
        "the master takes writes before the fault"
    );
    let fault_at = Instant::now();
    fault();
    let new_master = wait_for(
        Duration::from_secs(90),
        "another instance to take a write after the fault",
        || {
            w.round(c);
            w.first_ok.keys().find(|uid| *uid != old_master).cloned()
        },
    );
    // A few more rounds: the old master must stay silent after the new one took writes.
    for _ in 0..20 {
        w.round(c);
    }
    let old_last = w.last_ok[old_master];
    let new_first = w.first_ok[&new_master];
    eprintln!(
        "old master {old_master}: last write acknowledged {:?} after the fault; new master {new_master}: first write {:?} after the fault",
        old_last.saturating_duration_since(fault_at),
        new_first.saturating_duration_since(fault_at),
    );
    assert!(
        old_last < new_first,
        "dual master: {old_master} acknowledged a write {:?} after {new_master} took its first",
        old_last.saturating_duration_since(new_first)
    );
}

fn cluster(name: &str) -> (Cluster, String) {
    let c = ClusterBuilder::new(name).keepers(2).sentinels(1).start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    let standby = c.keepers.keys().find(|k| **k != master).unwrap().clone();
    c.psql_via_proxy("create table fence_t (k text, n bigint)")
        .unwrap();
    c.psql_via_proxy("insert into fence_t values ('setup', 0)")
        .unwrap();
    // Replaying the master's writes and reported healthy: a standby the sentinel can elect.
    c.wait_keeper_rows(
        &standby,
        "select k from fence_t",
        &["setup"],
        Duration::from_secs(120),
    );
    wait_until(
        Duration::from_secs(60),
        "the standby's db healthy in the clusterdata",
        || {
            c.try_clusterdata().is_some_and(|cd| {
                Cluster::keeper_db(&cd, &standby)
                    .is_some_and(|db| cd["dbs"][&db]["status"]["healthy"] == true)
            })
        },
    );
    (c, master)
}

#[test]
fn frozen_master_keeper_is_fenced_before_a_new_master_takes_writes() {
    let (mut c, master) = cluster("fence-stop");
    // The keeper that wakes up finds it missed its deadline and kills its PostgreSQL.
    c.allow_error("FENCING");
    c.allow_error("postgres exited unexpectedly");
    let pid = c.keepers[&master]
        .postmaster_pid()
        .expect("master postmaster");
    writes_never_overlap(&c, &master, || {
        c.signal_keeper_process(&master, Signal::SIGSTOP)
    });
    assert_ne!(
        c.keepers[&master].postmaster_pid(),
        Some(pid),
        "the frozen keeper's PostgreSQL still runs"
    );
    c.signal_keeper_process(&master, Signal::SIGCONT);
}

#[test]
fn killed_master_keeper_takes_its_postgres_along() {
    let (c, master) = cluster("fence-kill");
    let pid = c.keepers[&master]
        .postmaster_pid()
        .expect("master postmaster");
    let killed_at = Instant::now();
    writes_never_overlap(&c, &master, || {
        c.signal_keeper_process(&master, Signal::SIGKILL)
    });
    wait_until(
        Duration::from_secs(10),
        "the dead keeper's PostgreSQL to be gone",
        || c.keepers[&master].postmaster_pid() != Some(pid),
    );
    eprintln!(
        "postmaster {pid} gone {:?} after its keeper was killed (checked after the failover)",
        killed_at.elapsed()
    );
}

/// The postmaster of `pgdata` and its children, from /proc.
fn instance_pids(pgdata: &std::path::Path) -> Vec<i32> {
    let Some(postmaster) = support::procs::postmaster_pid(pgdata) else {
        return Vec::new();
    };
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // "pid (comm) state ppid ...": the fields after the command's closing parenthesis.
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}

/// Best effort: a process may be gone (the fence guard kills the frozen instance).
fn signal_all(pids: &[i32], sig: Signal) {
    for pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), sig);
    }
}

#[test]
fn a_frozen_master_keeper_and_postgresql_never_overlap_and_rejoin_as_a_standby() {
    let (mut c, master) = cluster("fence-freeze");
    c.allow_error("FENCING");
    c.allow_error("postgres exited unexpectedly");
    let pids = instance_pids(&c.keepers[&master].data_dir.join("postgres"));
    assert!(pids.len() > 1, "the master's postmaster and its children");
    // Keeper and PostgreSQL frozen together (the fence guard, a process of its own, is not):
    // the sentinel fails the master over, and nothing the frozen instance does may overlap.
    writes_never_overlap(&c, &master, || {
        c.signal_keeper_process(&master, Signal::SIGSTOP);
        signal_all(&pids, Signal::SIGSTOP);
    });
    signal_all(&pids, Signal::SIGCONT);
    c.signal_keeper_process(&master, Signal::SIGCONT);
    c.wait_healthy_standby(&master, None);
    wait_until(
        Duration::from_secs(60),
        "the old master's PostgreSQL serving read-only",
        || {
            c.psql_keeper(&master, "select pg_is_in_recovery()")
                .is_ok_and(|ro| ro[0][0].as_deref() == Some("t"))
        },
    );
}
