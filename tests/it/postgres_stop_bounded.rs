//! A shutdown stuck on a stopped child ends within the stop's total time: a standby whose
//! walreceiver is SIGSTOPped (as tests/cluster_standby_lag.rs does) never finishes a fast
//! shutdown, and `stop_fast` escalates to an immediate shutdown and SIGKILL within its bound,
//! leaving no process behind. The keeper stops postgres this way in its loop, with
//! min(dbWaitReadyTimeout, 30 s) as the bound. Real PostgreSQL 15; run as root, postgres runs
//! as `postgres`.

use crate::support;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};
use stolon::postgres::*;
use support::pg::{REPL, REPL_LOGIN, REPL_PW, SU, SU_LOGIN, SU_PW};
use support::procs::RunAs as OsUser;
use support::{free_port, pg_bin, pg_temp_dir};

const TIMEOUT: Duration = Duration::from_secs(60);
/// The stop's total time under test; its fast-shutdown part is half of it (see `escalation`
/// in src/postgres/process.rs).
const BOUND: Duration = Duration::from_secs(8);

fn configure(pgdata: &Pgdata, port: u16, socket_dir: &Path, recovery: Option<&RecoverySettings>) {
    let managed = support::pg::managed(port, socket_dir, "");
    let params = build_parameters(None, &Default::default(), &managed, recovery);
    write_postgresql_conf(pgdata, &params).unwrap();
    write_pg_hba(pgdata, &support::pg::hba(recovery.is_none())).unwrap();
}

/// The child of `parent` whose command line starts with `postgres: <title>`.
fn child_titled(parent: u32, title: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: u32 = stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
        (ppid == parent && cmdline.starts_with(&format!("postgres: {title}"))).then_some(pid)
    })
}

/// The process is gone (or a zombie waiting for its reaper).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
            .is_some_and(|s| s == 'Z' || s == 'X'),
    }
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_with_a_stopped_walreceiver_ends_within_its_bound() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let user = OsUser::keeper_user();
    let dir = pg_temp_dir(user);
    let sock = dir.path().join("sock");
    let bins = PgBinaries::locate(Some(Path::new(&pg_bin()))).unwrap();
    let opts = StartOptions {
        config_file: None,
        socket_dir: sock.clone(),
        timeout: TIMEOUT,
    };
    let (port1, port2) = (free_port(), free_port());

    let pgdata1 = user.pgdata(dir.path().join("master"));
    initdb(&bins, &pgdata1, SU, Some(SU_PW), None)
        .await
        .unwrap();
    configure(&pgdata1, port1, &sock, None);
    let mut master = PgProcess::start(&bins, &pgdata1, &opts).await.unwrap();
    master.wait_ready(TIMEOUT).await.unwrap();
    let client = PgClient::connect(&LocalConn {
        socket_dir: sock.clone(),
        port: port1,
        user: SU.into(),
        password: Some(SU_PW.into()),
        timeout: Duration::from_secs(10),
    })
    .await
    .unwrap();
    client.setup_roles(&SU_LOGIN, &REPL_LOGIN).await.unwrap();
    client.close().await;

    let pgdata2 = user.pgdata(dir.path().join("standby"));
    let conn = ReplConn {
        host: "127.0.0.1".into(),
        port: port1,
        user: REPL.into(),
        password: Some(REPL_PW.into()),
        application_name: stolon_name("standby"),
    };
    pg_basebackup(&bins, &pgdata2, &conn, None, |_, _| {})
        .await
        .unwrap();
    let passfile = dir.path().join("standby.pgpass");
    write_passfile(&pgdata2, &passfile, &conn).unwrap();
    let recovery = RecoverySettings {
        primary_conninfo: Some(conn.conninfo(Some(&passfile))),
        ..Default::default()
    };
    configure(&pgdata2, port2, &sock, Some(&recovery));
    write_standby_signal(&pgdata2).unwrap();
    let standby = PgProcess::start(&bins, &pgdata2, &opts).await.unwrap();
    let postmaster = standby.pid();
    let walreceiver = wait_for("the standby's walreceiver", || {
        child_titled(postmaster, "walreceiver")
    })
    .await;

    kill(Pid::from_raw(walreceiver), Signal::SIGSTOP).unwrap();
    let started = Instant::now();
    let res = standby.stop_fast(BOUND).await;
    let took = started.elapsed();
    res.unwrap();
    assert!(
        took >= BOUND / 2,
        "the fast shutdown finished in {took:?} although the walreceiver was stopped: this test no longer tests a stuck shutdown"
    );
    assert!(
        took <= BOUND + Duration::from_secs(1),
        "stop took {took:?}, more than its bound {BOUND:?}"
    );
    assert!(gone(postmaster as i32), "the postmaster survived the stop");
    wait_for("the stopped walreceiver to be killed", || {
        gone(walreceiver).then_some(())
    })
    .await;

    master.stop_fast(TIMEOUT).await.unwrap();
}
