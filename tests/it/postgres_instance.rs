//! The postgres toolkit against a real PostgreSQL 15: initdb, start as a child, roles, a
//! standby made with pg_basebackup streaming through its slot, promotion to timeline 2,
//! ALTER SYSTEM blocked, a stale postmaster stopped. Run as root, postgres runs as `postgres`.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stolon::postgres::*;
use support::pg::{REPL, REPL_LOGIN, REPL_PW, SU, SU_LOGIN, SU_PW};
use support::procs::RunAs as OsUser;
use support::{free_port, pg_bin, pg_temp_dir};

const TIMEOUT: Duration = Duration::from_secs(60);

fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
}

/// A temp dir the postgres user can use, with a private socket directory.
struct Env {
    dir: tempfile::TempDir,
    user: OsUser,
    bins: PgBinaries,
}

impl Env {
    fn new() -> Env {
        init_tracing();
        let user = OsUser::keeper_user();
        let dir = pg_temp_dir(user);
        let bins = PgBinaries::locate(Some(Path::new(&pg_bin()))).unwrap();
        Env { dir, user, bins }
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn pgdata(&self, name: &str) -> Pgdata {
        self.user.pgdata(self.dir.path().join(name))
    }

    fn managed(&self, port: u16, synchronous_standby_names: &str) -> ManagedParams {
        support::pg::managed(port, &self.socket_dir(), synchronous_standby_names)
    }

    /// Writes postgresql.conf and pg_hba.conf as the keeper would, blocks ALTER SYSTEM.
    fn configure(&self, pgdata: &Pgdata, port: u16, recovery: Option<&RecoverySettings>) {
        self.configure_sync(pgdata, port, recovery, "");
    }

    fn configure_sync(
        &self,
        pgdata: &Pgdata,
        port: u16,
        recovery: Option<&RecoverySettings>,
        synchronous_standby_names: &str,
    ) {
        let spec: BTreeMap<String, String> = [("work_mem".to_string(), "8MB".to_string())].into();
        let managed = self.managed(port, synchronous_standby_names);
        let params = build_parameters(None, &spec, &managed, recovery);
        write_postgresql_conf(pgdata, &params).unwrap();
        write_pg_hba(pgdata, &support::pg::hba(recovery.is_none())).unwrap();
        disable_alter_system(pgdata).unwrap();
    }

    fn start_options(&self) -> StartOptions {
        StartOptions {
            config_file: None,
            socket_dir: self.socket_dir(),
            timeout: TIMEOUT,
        }
    }

    async fn client(&self, port: u16) -> PgClient {
        PgClient::connect(&LocalConn {
            socket_dir: self.socket_dir(),
            port,
            user: SU.into(),
            password: Some(SU_PW.into()),
            timeout: Duration::from_secs(10),
        })
        .await
        .unwrap()
    }

    async fn new_master(&self, name: &str, port: u16) -> (Pgdata, PgProcess) {
        let pgdata = self.pgdata(name);
        initdb(&self.bins, &pgdata, SU, Some(SU_PW), None)
            .await
            .unwrap();
        assert!(is_initialized(&pgdata));
        self.configure(&pgdata, port, None);
        let mut pg = PgProcess::start(&self.bins, &pgdata, &self.start_options())
            .await
            .unwrap();
        pg.wait_ready(TIMEOUT).await.unwrap();
        (pgdata, pg)
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_standby_promotion() {
    let env = Env::new();
    assert_eq!(env.bins.version().unwrap().maj, 15);
    let (port1, port2) = (free_port(), free_port());

    // Master: initdb, start, roles, state.
    let (pgdata1, pg1) = env.new_master("db1", port1).await;
    let master = env.client(port1).await;
    master.setup_roles(&SU_LOGIN, &REPL_LOGIN).await.unwrap();
    // Idempotent: a retried init must not fail on the existing role.
    master.setup_roles(&SU_LOGIN, &REPL_LOGIN).await.unwrap();
    let state1 = master.gather_state(&pgdata1).await.unwrap();
    assert!(!state1.in_recovery);
    assert!(state1.system_id.parse::<u64>().unwrap() > 0);
    assert_eq!(state1.timeline_id, 1);
    assert!(state1.x_log_pos > 0);
    assert!(state1.timelines_history.is_empty());
    assert_eq!(
        state1.pg_parameters.get("work_mem").map(String::as_str),
        Some("8MB")
    );
    assert!(!state1.pg_parameters.contains_key("port"));
    assert!(!state1.older_wal_file.is_empty());
    assert!(!master.pending_restart().await.unwrap());

    // ALTER SYSTEM is blocked.
    let err = master
        .execute("ALTER SYSTEM SET work_mem = '1MB'")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("postgresql.auto.conf"), "{err}");

    // The master's keeper creates the standby's slot; an unknown stolon slot goes, others stay.
    master
        .execute(
            "SELECT pg_create_physical_replication_slot('stolon_gone'); \
                  SELECT pg_create_physical_replication_slot('foreign')",
        )
        .await
        .unwrap();
    let wanted: BTreeSet<String> = ["db2".to_string()].into();
    master.reconcile_replication_slots(&wanted).await.unwrap();
    assert_eq!(master.stolon_replication_slots().await.unwrap(), wanted);
    let foreign = master
        .execute("SELECT pg_drop_replication_slot('foreign')")
        .await;
    assert!(foreign.is_ok(), "non-stolon slot must be left alone");

    master
        .execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    // Standby: pg_basebackup through the slot, recovery settings, start, streaming.
    let pgdata2 = env.pgdata("db2");
    let conn = ReplConn {
        host: "127.0.0.1".into(),
        port: port1,
        user: REPL.into(),
        password: Some(REPL_PW.into()),
        application_name: stolon_name("db2"),
    };
    let mut last_progress = (0, 0);
    pg_basebackup(
        &env.bins,
        &pgdata2,
        &conn,
        Some("stolon_db2"),
        |done, total| last_progress = (done, total),
    )
    .await
    .unwrap();
    assert!(last_progress.1 > 0, "progress reported: {last_progress:?}");
    assert_eq!(last_progress.0, last_progress.1);
    assert!(is_initialized(&pgdata2));
    // The password reaches the WAL receiver through a password file only.
    let passfile = env.dir.path().join("db2.pgpass");
    write_passfile(&pgdata2, &passfile, &conn).unwrap();
    env.configure(
        &pgdata2,
        port2,
        Some(&RecoverySettings::internal_standby(
            &conn,
            "db2",
            Some(&passfile),
        )),
    );
    write_standby_signal(&pgdata2).unwrap();
    assert_eq!(local_role(&pgdata2), LocalRole::Standby);
    let mut pg2 = PgProcess::start(&env.bins, &pgdata2, &env.start_options())
        .await
        .unwrap();
    pg2.wait_ready(TIMEOUT).await.unwrap();
    eventually("standby streaming", || async {
        master
            .replication()
            .await
            .unwrap()
            .iter()
            .any(|r| r.application_name == "stolon_db2" && r.state == "streaming")
    })
    .await;
    // Streaming with the password read from the file: what SHOW primary_conninfo shows has none.
    let conf = std::fs::read_to_string(pgdata2.join("postgresql.conf")).unwrap();
    assert!(conf.contains("passfile="), "{conf}");
    assert!(
        !conf.contains(REPL_PW),
        "the replication password is in postgresql.conf"
    );
    // Synchronous replication as right after a failover: commits wait for a standby the
    // master does not have (the sentinel's fake one), then the sentinel names db2, which
    // already has their WAL and, nothing else being written, would confirm only after
    // wal_receiver_status_interval (10 s). release_sync_waiters lets them through at once.
    env.configure_sync(&pgdata1, port1, None, "stolonfakestandby");
    pg1.reload().unwrap();
    let writer = env.client(port1).await;
    let mut waiting =
        tokio::spawn(async move { writer.execute("INSERT INTO t VALUES (10)").await });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "a commit waits while no standby can confirm it"
    );
    env.configure_sync(&pgdata1, port1, None, "stolon_db2");
    pg1.reload().unwrap();
    let names: BTreeSet<String> = ["stolon_db2".to_string()].into();
    assert!(
        master
            .release_sync_waiters(&names, Duration::from_secs(2))
            .await
            .unwrap()
    );
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting commit is released once db2 is named and nudged")
        .unwrap()
        .unwrap();
    let none: BTreeSet<String> = ["stolon_gone".to_string()].into();
    assert!(
        !master
            .release_sync_waiters(&none, Duration::from_secs(2))
            .await
            .unwrap(),
        "nothing to nudge when the named standby is not connected"
    );
    env.configure(&pgdata1, port1, None);
    pg1.reload().unwrap();

    let standby = env.client(port2).await;
    let state2 = standby.gather_state(&pgdata2).await.unwrap();
    assert!(state2.in_recovery);
    assert_eq!(state2.system_id, state1.system_id);
    assert_eq!(state2.timeline_id, 1);
    assert!(state2.x_log_pos >= state1.x_log_pos);
    assert_eq!(state2.streaming_standbys, 0);
    assert!(
        state2.replay_lag.is_some(),
        "a streaming standby reports its lag"
    );
    assert_eq!(
        master
            .gather_state(&pgdata1)
            .await
            .unwrap()
            .streaming_standbys,
        1
    );
    assert_eq!(state1.replay_lag, None, "a master has no replay lag");

    // Promotion: the old master stops, the standby becomes master on timeline 2.
    let master_pos = master.gather_state(&pgdata1).await.unwrap().x_log_pos;
    drop(master);
    pg1.stop_fast(TIMEOUT).await.unwrap();
    promote(&env.bins, &pgdata2).await.unwrap();
    standby.wait_promoted(TIMEOUT).await.unwrap();
    assert_eq!(local_role(&pgdata2), LocalRole::Master);
    let state = standby.gather_state(&pgdata2).await.unwrap();
    assert!(!state.in_recovery);
    assert_eq!(state.timeline_id, 2);
    assert_eq!(state.timelines_history.len(), 1);
    assert_eq!(state.timelines_history[0].timeline_id, 1);
    assert!(state.timelines_history[0].switch_point >= master_pos);
    standby.execute("INSERT INTO t VALUES (2)").await.unwrap();

    // Reload and a clean stop.
    pg2.reload().unwrap();
    drop(standby);
    assert!(pg2.is_running());
    pg2.stop_fast(TIMEOUT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_stale_instance() {
    let env = Env::new();

    // A failed initdb leaves no data directory behind.
    let bad = env.pgdata("bad");
    let nc = stolon::cluster::NewConfig {
        locale: "xx_NOT_A_LOCALE".into(),
        ..Default::default()
    };
    let err = initdb(&env.bins, &bad, SU, None, Some(&nc))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("initdb"), "{err}");
    assert!(!bad.exists());

    // postgres dying at start is reported with its own words.
    let port = free_port();
    let pgdata = env.pgdata("db");
    initdb(&env.bins, &pgdata, SU, Some(SU_PW), None)
        .await
        .unwrap();
    env.configure(&pgdata, port, None);
    let bogus: BTreeMap<String, String> =
        [("shared_buffers".to_string(), "bogus".to_string())].into();
    let temp = write_temp_postgresql_conf(&pgdata, &bogus).unwrap();
    let mut opts = env.start_options();
    opts.config_file = Some(temp);
    let err = PgProcess::start(&env.bins, &pgdata, &opts)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("postgres exited unexpectedly"), "{msg}");
    assert!(msg.contains("shared_buffers"), "{msg}");

    // A postmaster that dies under us is noticed, with its exit status.
    let mut pg = PgProcess::start(&env.bins, &pgdata, &env.start_options())
        .await
        .unwrap();
    assert!(pg.is_running());
    // A backend busy with a long CPU-bound query does not notice the postmaster's death.
    let busy = env.client(port).await;
    let query = tokio::spawn(async move {
        let _ = busy
            .execute("SELECT count(*) FROM generate_series(1, 100000000000)")
            .await;
    });
    eventually("busy backend running", || async {
        live_processes_in(&pgdata).iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("SELECT"))
        })
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pg.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let why = tokio::time::timeout(TIMEOUT, pg.exited()).await.unwrap();
    assert!(why.contains("signal: 9"), "{why}");
    assert!(!pg.is_running());
    // Its orphaned children (checkpointer, walwriter, ...) are swept too.
    eventually("orphaned postgres children gone", || async {
        live_processes_in(&pgdata).is_empty()
    })
    .await;
    query.abort();
    drop(pg);

    // A postmaster left behind by a previous keeper is found and stopped.
    assert!(!stop_stale_instance(&pgdata, TIMEOUT).await.unwrap());
    let pg = PgProcess::start(&env.bins, &pgdata, &env.start_options())
        .await
        .unwrap();
    let pid = pg.pid() as i32;
    // Simulate the keeper dying without stopping it; the guard still kills it if we fail.
    let _guard = KillGuard(pid);
    std::mem::forget(pg);
    assert!(stop_stale_instance(&pgdata, TIMEOUT).await.unwrap());
    assert!(!pgdata.join("postmaster.pid").exists());
    // It was our child after all: reap it.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
}

struct KillGuard(i32);

impl Drop for KillGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Live (non-zombie) processes whose working directory is `pgdata`.
fn live_processes_in(pgdata: &Path) -> Vec<i32> {
    let pgdata = std::fs::canonicalize(pgdata).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == pgdata)
                && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
        })
        .collect()
}
