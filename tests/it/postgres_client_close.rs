//! The keeper's SQL connections end with a protocol goodbye, not a cut socket: a real
//! PostgreSQL 15 logging at debug1 reports a cut as `unexpected EOF on client connection` (or
//! worse, `could not receive data from client` / `connection to client lost`), and must report
//! none of that for clients that were dropped or closed. Also checks that postgres's own log
//! lines reach tracing at their severity. Run as root, postgres runs as `postgres`.

use crate::support;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stolon::cluster::SuReplAccessMode;
use stolon::keeper::AuthMethod;
use stolon::postgres::*;
use support::procs::RunAs as OsUser;
use support::{free_port, pg_bin, pg_temp_dir};

const SU: &str = "su";
const SU_PW: &str = "secret";
const TIMEOUT: Duration = Duration::from_secs(60);

/// Everything logged in this test process, as formatted lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_and_closed_clients_leave_a_clean_server_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let user = OsUser::keeper_user();
    let dir = pg_temp_dir(user);
    let sock = dir.path().join("sock");
    let bins = PgBinaries::locate(Some(Path::new(&pg_bin()))).unwrap();
    let pgdata = user.pgdata(dir.path().join("pgdata"));
    let port = free_port();

    initdb(&bins, &pgdata, SU, Some(SU_PW), None).await.unwrap();
    let managed = ManagedParams {
        listen_address: "127.0.0.1".into(),
        port,
        socket_dir: sock.display().to_string(),
        max_standbys: 2,
        additional_wal_senders: 0,
        use_pg_rewind: false,
        synchronous_standby_names: String::new(),
        scram: true,
    };
    let spec = [("log_min_messages", "debug1"), ("log_disconnections", "on")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    write_postgresql_conf(&pgdata, &build_parameters(None, &spec, &managed, None)).unwrap();
    let hba = render_pg_hba(&HbaParams {
        su_username: SU,
        su_auth: AuthMethod::Md5,
        repl_username: SU,
        repl_auth: AuthMethod::Md5,
        access_mode: SuReplAccessMode::All,
        is_master: true,
        other_db_addresses: &[],
        spec_hba: None,
        trust_networks: &[],
        internal_only: false,
    });
    write_pg_hba(&pgdata, &hba).unwrap();
    let opts = StartOptions {
        config_file: None,
        socket_dir: sock.clone(),
        timeout: TIMEOUT,
    };
    let mut pg = PgProcess::start(&bins, &pgdata, &opts).await.unwrap();
    pg.wait_ready(TIMEOUT).await.unwrap();

    let conn = LocalConn {
        socket_dir: sock.clone(),
        port,
        user: SU.into(),
        password: Some(SU_PW.into()),
        timeout: Duration::from_secs(10),
    };
    for _ in 0..3 {
        let c = PgClient::connect(&conn).await.unwrap();
        c.ping().await.unwrap();
        drop(c);
    }
    for _ in 0..3 {
        let c = PgClient::connect(&conn).await.unwrap();
        c.ping().await.unwrap();
        c.close().await;
    }

    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while captured
        .text()
        .matches("disconnection: session time")
        .count()
        < 6
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "postgres did not log 6 disconnections:\n{}",
            captured.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pg.stop_fast(TIMEOUT).await.unwrap();

    let log = captured.text();
    for cut in [
        "unexpected EOF on client connection",
        "could not receive data from client",
        "connection to client lost",
    ] {
        assert!(
            !log.contains(cut),
            "server saw a cut connection ({cut}):\n{log}"
        );
    }
    // Forwarded at postgres's own severity: LOG is info, DEBUG is debug.
    let line_with = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no log line with {needle:?}:\n{log}"))
            .to_string()
    };
    assert!(line_with("LOG:  disconnection: session time").contains(" INFO "));
    assert!(line_with("DEBUG:  ").contains(" DEBUG "));
}
