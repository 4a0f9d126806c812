//! The keeper's SQL connection to its own postgres: unix socket, superuser, database `postgres`
//! (the only one pg_hba's `local` rule opens to it), every call bounded by a timeout.
//!
//! Upstream reads system id, timeline and WAL position with IDENTIFY_SYSTEM over a replication
//! connection; tokio-postgres has no replication mode, so the same facts come from SQL and the
//! timeline history from `pg_wal/<tli>.history` (see [`PgClient::gather_state`]).

use super::conf::{filter_managed, stolon_name, uid_from_stolon_name};
use super::files::{oldest_wal_file, parse_lsn, read_timeline_history, wal_name_in_16mib_segments};
use super::{AuthMethod, PgError};
use crate::cluster::{DbUid, TimelineHistory};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How the keeper reaches its own postgres.
#[derive(Clone)]
pub struct LocalConn {
    pub socket_dir: PathBuf,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// Bound on connecting and on each query (the spec's requestTimeout).
    pub timeout: Duration,
}

impl std::fmt::Debug for LocalConn {
    // The password never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalConn")
            .field("socket_dir", &self.socket_dir)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What the keeper publishes about its instance in `PostgresState` (as upstream: "Reported
/// state"), apart from the uid/generation/address it knows itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PgState {
    pub in_recovery: bool,
    pub system_id: String,
    pub timeline_id: u64,
    /// Master: flushed WAL position. Standby: the furthest of received and replayed.
    pub x_log_pos: u64,
    /// The last 2 entries of the current timeline's history (as upstream publishes).
    pub timelines_history: Vec<TimelineHistory>,
    /// Parameters from the configuration files, minus the managed ones.
    pub pg_parameters: BTreeMap<String, String>,
    /// Db uids of the `stolon_*` standbys currently in sync.
    pub synchronous_standbys: Vec<DbUid>,
    pub older_wal_file: String,
    /// Master: walsenders in state `streaming` (any application name).
    pub streaming_standbys: usize,
    /// Standby: received but not yet replayed WAL, in bytes; `None` while nothing is received
    /// (no WAL receiver yet, or recovering from an archive).
    pub replay_lag: Option<u64>,
}

/// One row of `pg_stat_replication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationRow {
    pub application_name: String,
    pub state: String,
    pub sync_state: String,
}

/// How long a connection may take to say goodbye (Terminate) once its client is gone.
const CLOSE_BOUND: Duration = Duration::from_secs(2);

/// A connection to the local postgres. Dropping it closes the connection gracefully in the
/// background; [`PgClient::close`] does the same and waits for it.
pub struct PgClient {
    client: tokio_postgres::Client,
    timeout: Duration,
    conn_task: JoinHandle<()>,
    /// Dropped with the client: tells the connection task to start its bounded goodbye.
    _gone: oneshot::Sender<()>,
}

impl PgClient {
    pub async fn connect(c: &LocalConn) -> Result<PgClient, PgError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(&c.socket_dir)
            .port(c.port)
            .user(&c.user)
            .dbname("postgres")
            .application_name("stolon-keeper")
            .connect_timeout(c.timeout);
        if let Some(pw) = &c.password {
            cfg.password(pw);
        }
        let socket = format!("{}/.s.PGSQL.{}", c.socket_dir.display(), c.port);
        let connecting = cfg.connect(tokio_postgres::NoTls);
        let (client, connection) = match tokio::time::timeout(c.timeout, connecting).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(source)) => return Err(PgError::connect(socket, source)),
            Err(_) => {
                return Err(PgError::Timeout {
                    what: format!("connection to postgres at {socket}"),
                    after: c.timeout,
                });
            }
        };
        let (gone_tx, gone_rx) = oneshot::channel();
        let conn_task = tokio::spawn(drive_connection(connection, gone_rx));
        Ok(PgClient {
            client,
            timeout: c.timeout,
            conn_task,
            _gone: gone_tx,
        })
    }

    /// Closes the connection and waits (briefly) until the server has it closed too.
    pub async fn close(self) {
        let PgClient {
            client, conn_task, ..
        } = self;
        drop(client);
        let _ = tokio::time::timeout(CLOSE_BOUND + Duration::from_millis(100), conn_task).await;
    }

    async fn bounded<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, PgError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(PgError::query(what, source)),
            Err(_) => Err(PgError::Timeout {
                what: format!("query {what}"),
                after: self.timeout,
            }),
        }
    }

    async fn one_text(&self, what: &'static str, sql: &str) -> Result<Option<String>, PgError> {
        let row = self.bounded(what, self.client.query_one(sql, &[])).await?;
        row.try_get::<_, Option<String>>(0)
            .map_err(|source| PgError::query(what, source))
    }

    /// Runs statements with no result (tests and ad-hoc maintenance).
    pub async fn execute(&self, sql: &str) -> Result<(), PgError> {
        self.bounded("statement", self.client.batch_execute(sql))
            .await
    }

    /// `SELECT 1`.
    pub async fn ping(&self) -> Result<(), PgError> {
        self.bounded("ping", self.client.simple_query("SELECT 1"))
            .await
            .map(|_| ())
    }

    pub async fn is_in_recovery(&self) -> Result<bool, PgError> {
        let row = self
            .bounded(
                "pg_is_in_recovery",
                self.client.query_one("SELECT pg_is_in_recovery()", &[]),
            )
            .await?;
        row.try_get(0)
            .map_err(|source| PgError::query("pg_is_in_recovery", source))
    }

    /// Waits until a promotion asked for has ended (the instance takes writes), looking every
    /// 10 ms: a failover or switchover is timed on this wait, which pg_ctl's own takes in
    /// 100 ms steps.
    pub async fn wait_promoted(&self, timeout: std::time::Duration) -> Result<(), PgError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.is_in_recovery().await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(PgError::Timeout {
                    what: "the promotion".into(),
                    after: timeout,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The database system identifier (decimal, as upstream reports it).
    pub async fn system_identifier(&self) -> Result<String, PgError> {
        self.one_text(
            "system identifier",
            "SELECT system_identifier::text FROM pg_control_system()",
        )
        .await?
        .ok_or_else(|| PgError::Unexpected {
            what: "system identifier",
            detail: "NULL".into(),
        })
    }

    /// (timeline, WAL position). On a master the timeline is the one WAL is written on. On a
    /// standby the position is the furthest of received and replayed, and the timeline is the
    /// one that position lies on in the newest history known in `pg_wal` (a standby follows the
    /// latest timeline), never older than its last restartpoint's.
    pub async fn timeline_and_position(&self, pgdata: &Path) -> Result<(u64, u64), PgError> {
        if !self.is_in_recovery().await? {
            let row = self
                .bounded(
                    "current WAL position",
                    self.client.query_one(
                        "SELECT pg_current_wal_flush_lsn()::text, \
                         pg_walfile_name(pg_current_wal_flush_lsn())",
                        &[],
                    ),
                )
                .await?;
            let lsn: String = row
                .try_get(0)
                .map_err(|source| PgError::query("current WAL position", source))?;
            let file: String = row
                .try_get(1)
                .map_err(|source| PgError::query("current WAL position", source))?;
            let pos = parse_lsn(&lsn).ok_or_else(|| PgError::Unexpected {
                what: "WAL position",
                detail: lsn.clone(),
            })?;
            let tli = file
                .get(..8)
                .and_then(|t| u64::from_str_radix(t, 16).ok())
                .ok_or_else(|| PgError::Unexpected {
                    what: "WAL file name",
                    detail: file.clone(),
                })?;
            return Ok((tli, pos));
        }
        let row = self
            .bounded(
                "standby WAL position",
                self.client.query_one(
                    "SELECT GREATEST(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text, \
                     (SELECT timeline_id::int8 FROM pg_control_checkpoint())",
                    &[],
                ),
            )
            .await?;
        let lsn: Option<String> = row
            .try_get(0)
            .map_err(|source| PgError::query("standby WAL position", source))?;
        let checkpoint_tli: i64 = row
            .try_get(1)
            .map_err(|source| PgError::query("standby WAL position", source))?;
        let pos = lsn.as_deref().and_then(parse_lsn).unwrap_or(0);
        let tli = standby_timeline(pgdata, pos, checkpoint_tli.max(1) as u64)?;
        Ok((tli, pos))
    }

    /// Db uids of the `stolon_*` standbys in `pg_stat_replication` with sync_state `sync`.
    pub async fn synchronous_standbys(&self) -> Result<Vec<DbUid>, PgError> {
        Ok(sync_standby_uids(&self.replication().await?))
    }

    /// After `synchronous_standby_names` changed (and was reloaded): once the walsenders of the
    /// named standbys that are connected have taken the change (sync_state `sync`/`quorum`),
    /// commits one local transaction so they stream something and the standbys confirm it.
    /// Commits already waiting are released only by a standby's next confirmation, and one
    /// that already has all the WAL sends it after `wal_receiver_status_interval` (10 s by
    /// default) when nothing else is written: after a failover, until then every commit
    /// waited. Returns whether it committed (false: none of the named standbys is connected,
    /// or their walsenders did not take the change within `within`).
    pub async fn release_sync_waiters(
        &self,
        application_names: &BTreeSet<String>,
        within: Duration,
    ) -> Result<bool, PgError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let rows = self.replication().await?;
            let named: Vec<&ReplicationRow> = rows
                .iter()
                .filter(|r| application_names.contains(&r.application_name))
                .collect();
            if named.is_empty() {
                return Ok(false);
            }
            if named
                .iter()
                .all(|r| r.sync_state == "sync" || r.sync_state == "quorum")
            {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // An xid makes the commit write (and flush) a record; `local` so that this commit
        // does not itself wait for the standbys it is meant to wake.
        self.bounded(
            "release synchronous commits",
            self.client.batch_execute(
                "BEGIN; SET LOCAL synchronous_commit = local; SELECT txid_current(); COMMIT",
            ),
        )
        .await?;
        Ok(true)
    }

    /// `wal_segment_size` in bytes (set at initdb; pg_settings gives bytes from PostgreSQL 11).
    pub async fn wal_segment_size(&self) -> Result<u64, PgError> {
        let what = "WAL segment size";
        let row = self
            .bounded(
                what,
                self.client.query_one(
                    "SELECT setting::int8 FROM pg_settings WHERE name = 'wal_segment_size'",
                    &[],
                ),
            )
            .await?;
        let size: i64 = row
            .try_get(0)
            .map_err(|source| PgError::query(what, source))?;
        Ok(size.max(0) as u64)
    }

    /// On a standby: its WAL receiver has written WAL it got from the followed db since it
    /// started streaming (PostgreSQL ≥ 13 names the columns so).
    pub async fn received_wal(&self) -> Result<bool, PgError> {
        let what = "WAL receiver progress";
        let row = self
            .bounded(
                what,
                self.client.query_one(
                    "SELECT coalesce((SELECT flushed_lsn > receive_start_lsn \
                     FROM pg_stat_wal_receiver), false)",
                    &[],
                ),
            )
            .await?;
        row.try_get(0)
            .map_err(|source| PgError::query(what, source))
    }

    /// On a standby: received minus replayed WAL in bytes (`None` when nothing is received).
    pub async fn replay_lag(&self) -> Result<Option<u64>, PgError> {
        let what = "replay lag";
        let row = self
            .bounded(
                what,
                self.client.query_one(
                    "SELECT greatest(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), \
                     pg_last_wal_replay_lsn()), 0)::int8",
                    &[],
                ),
            )
            .await?;
        let lag: Option<i64> = row
            .try_get(0)
            .map_err(|source| PgError::query(what, source))?;
        Ok(lag.map(|l| l.max(0) as u64))
    }

    /// `pg_stat_replication` (names, states).
    pub async fn replication(&self) -> Result<Vec<ReplicationRow>, PgError> {
        let what = "pg_stat_replication";
        let rows = self
            .bounded(
                what,
                self.client.query(
                    "SELECT coalesce(application_name, ''), coalesce(state, ''), \
                     coalesce(sync_state, '') FROM pg_stat_replication",
                    &[],
                ),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplicationRow {
                    application_name: r.try_get(0)?,
                    state: r.try_get(1)?,
                    sync_state: r.try_get(2)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|source| PgError::query(what, source))
    }

    /// Parameters as written in the configuration files (`pg_file_settings`, later entries
    /// winning), not filtered.
    pub async fn config_file_parameters(&self) -> Result<BTreeMap<String, String>, PgError> {
        let what = "pg_file_settings";
        let rows = self
            .bounded(
                what,
                self.client.query(
                    "SELECT name, setting FROM pg_file_settings \
                     WHERE error IS NULL AND setting IS NOT NULL ORDER BY seqno",
                    &[],
                ),
            )
            .await?;
        let mut out = BTreeMap::new();
        for r in rows {
            let name: String = r
                .try_get(0)
                .map_err(|source| PgError::query(what, source))?;
            let value: String = r
                .try_get(1)
                .map_err(|source| PgError::query(what, source))?;
            out.insert(name, value);
        }
        Ok(out)
    }

    /// True when a changed parameter only takes effect after a restart.
    pub async fn pending_restart(&self) -> Result<bool, PgError> {
        let what = "pending_restart";
        let row = self
            .bounded(
                what,
                self.client
                    .query_one("SELECT bool_or(pending_restart) FROM pg_settings", &[]),
            )
            .await?;
        let v: Option<bool> = row
            .try_get(0)
            .map_err(|source| PgError::query(what, source))?;
        Ok(v.unwrap_or(false))
    }

    /// After initdb: the replication user. When superuser and replication user are the same
    /// role it gets REPLICATION; otherwise the superuser's password is (re)set and the
    /// replication role created (or updated, so a retried init does not fail).
    pub async fn setup_roles(&self, su: &Login<'_>, repl: &Login<'_>) -> Result<(), PgError> {
        let repl_exists = su.user == repl.user
            || self
                .bounded(
                    "pg_roles",
                    self.client
                        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&repl.user]),
                )
                .await?
                .is_some();
        for statement in role_statements(su, repl, repl_exists) {
            self.execute(&statement).await?;
        }
        Ok(())
    }

    /// Names (without `stolon_`) of the physical slots stolon owns.
    pub async fn stolon_replication_slots(&self) -> Result<BTreeSet<String>, PgError> {
        let what = "pg_replication_slots";
        let rows = self
            .bounded(
                what,
                self.client.query(
                    "SELECT slot_name::text FROM pg_replication_slots WHERE slot_type = 'physical'",
                    &[],
                ),
            )
            .await?;
        let mut out = BTreeSet::new();
        for r in rows {
            let name: String = r
                .try_get(0)
                .map_err(|source| PgError::query(what, source))?;
            if let Some(uid) = uid_from_stolon_name(&name) {
                out.insert(uid.to_string());
            }
        }
        Ok(out)
    }

    /// Makes the `stolon_*` physical slots exactly `stolon_<w>` for `w` in `wanted` (follower
    /// db uids, excluding the db itself, plus additional slot names). Slots not named
    /// `stolon_*` are never touched. A failed drop (slot in use) is logged and retried on the
    /// next call, as upstream does.
    pub async fn reconcile_replication_slots(
        &self,
        wanted: &BTreeSet<String>,
    ) -> Result<(), PgError> {
        let existing = self.stolon_replication_slots().await?;
        for extra in existing.difference(wanted) {
            let name = stolon_name(extra);
            let res = self
                .bounded(
                    "drop replication slot",
                    self.client
                        .query("SELECT pg_drop_replication_slot($1)", &[&name]),
                )
                .await;
            match res {
                Ok(_) => tracing::info!(slot = %name, "replication slot dropped"),
                Err(e) => tracing::warn!(slot = %name, error = %e, "cannot drop replication slot"),
            }
        }
        for missing in wanted.difference(&existing) {
            let name = stolon_name(missing);
            self.bounded(
                "create replication slot",
                self.client
                    .query("SELECT pg_create_physical_replication_slot($1)", &[&name]),
            )
            .await?;
            tracing::info!(slot = %name, "replication slot created");
        }
        Ok(())
    }

    /// Everything the keeper reports about its running instance; any failure means the
    /// instance is reported unhealthy.
    pub async fn gather_state(&self, pgdata: &Path) -> Result<PgState, PgError> {
        let in_recovery = self.is_in_recovery().await?;
        let system_id = self.system_identifier().await?;
        let (timeline_id, x_log_pos) = self.timeline_and_position(pgdata).await?;
        let mut history = read_timeline_history(pgdata, timeline_id)?;
        let keep_from = history.len().saturating_sub(2);
        let timelines_history = history.split_off(keep_from);
        let pg_parameters = filter_managed(&self.config_file_parameters().await?);
        let replication = self.replication().await?;
        let replay_lag = if in_recovery {
            self.replay_lag().await?
        } else {
            None
        };
        let segment_size = self.wal_segment_size().await?;
        let older_wal_file = oldest_wal_file(pgdata)?
            .and_then(|name| wal_name_in_16mib_segments(&name, segment_size))
            .unwrap_or_default();
        Ok(PgState {
            in_recovery,
            system_id,
            timeline_id,
            x_log_pos,
            timelines_history,
            pg_parameters,
            synchronous_standbys: sync_standby_uids(&replication),
            older_wal_file,
            streaming_standbys: replication
                .iter()
                .filter(|r| r.state == "streaming")
                .count(),
            replay_lag,
        })
    }
}

fn sync_standby_uids(rows: &[ReplicationRow]) -> Vec<DbUid> {
    let mut uids: Vec<DbUid> = rows
        .iter()
        .filter(|r| r.sync_state == "sync")
        .filter_map(|r| uid_from_stolon_name(&r.application_name).map(DbUid::from))
        .collect();
    uids.sort();
    uids
}

/// Runs a connection until it ends. Once its client is dropped, tokio-postgres sends Terminate
/// and ends the connection itself: aborting the task instead would cut the socket and make the
/// server log `could not receive data from client` / `connection to client lost` for every
/// keeper query. A server that does not answer gets [`CLOSE_BOUND`], then the socket is cut.
async fn drive_connection<S, T>(
    connection: tokio_postgres::Connection<S, T>,
    gone: oneshot::Receiver<()>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::pin!(connection);
    tokio::select! {
        // Errors surface to the caller through the next query on the client.
        _ = &mut connection => return,
        _ = gone => {}
    }
    let _ = tokio::time::timeout(CLOSE_BOUND, connection).await;
}

/// The timeline `pos` lies on, following the newest history file in `pg_wal` (at least
/// `floor`, the last restartpoint's timeline).
fn standby_timeline(pgdata: &Path, pos: u64, floor: u64) -> Result<u64, PgError> {
    let wal = pgdata.join("pg_wal");
    let entries = std::fs::read_dir(&wal).map_err(|e| PgError::io(&wal, e))?;
    let mut newest = floor;
    let mut segment_timelines = BTreeSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(t) = name
            .strip_suffix(".history")
            .filter(|t| t.len() == 8)
            .and_then(|t| u64::from_str_radix(t, 16).ok())
        {
            newest = newest.max(t);
        } else if name.len() == 24
            && let Ok(t) = u64::from_str_radix(&name[..8], 16)
            && name.chars().all(|c| c.is_ascii_hexdigit())
        {
            segment_timelines.insert(t);
        }
    }
    let history = read_timeline_history(pgdata, newest)?;
    Ok(replayed_timeline(&history, newest, pos, &segment_timelines))
}

/// The timeline a standby at `pos` is on. From the history alone (`timeline_of_position`), a
/// standby that received WAL past the point where the new master's timeline forked off looks
/// as if it had followed the fork: it fetched the new timeline's history file, but it cannot
/// replay that timeline and never receives a byte of it. Reported so, the sentinel saw no
/// divergence, made it a synchronous standby that never confirms, and every commit on the new
/// master waited for ever (found by the vm-tests campaign after `failkeeper`). So a timeline of
/// which pg_wal holds no segment at all is one the standby has not switched to: it is on the
/// newest timeline below it that has segments. (No segment at all, e.g. WAL restored from an
/// archive only: the history alone decides, as before.)
fn replayed_timeline(
    history: &[TimelineHistory],
    newest: u64,
    pos: u64,
    segment_timelines: &BTreeSet<u64>,
) -> u64 {
    let claimed = timeline_of_position(history, newest, pos);
    if segment_timelines.is_empty() || segment_timelines.contains(&claimed) {
        return claimed;
    }
    segment_timelines
        .range(..claimed)
        .next_back()
        .copied()
        .unwrap_or(claimed)
}

/// As PostgreSQL's tliOfPointInHistory: the first timeline left after `pos`, else the newest.
fn timeline_of_position(history: &[TimelineHistory], newest: u64, pos: u64) -> u64 {
    history
        .iter()
        .find(|h| pos < h.switch_point)
        .map(|h| h.timeline_id)
        .unwrap_or(newest)
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A SQL string literal that is right whatever standard_conforming_strings says.
fn quote_literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// A role, its password and the method pg_hba.conf checks it with.
#[derive(Clone, Copy)]
pub struct Login<'a> {
    pub user: &'a str,
    pub password: Option<&'a str>,
    pub method: AuthMethod,
}

/// What PostgreSQL stores as `user`'s password: the verifier `method` checks, computed here so
/// that the plaintext never travels in SQL, where `log_statement`, the log line of a failing
/// statement (forwarded to the journal) and pg_stat_statements would keep it.
pub(crate) fn password_verifier(method: AuthMethod, user: &str, password: &str) -> String {
    match method {
        AuthMethod::Md5 => postgres_protocol::password::md5(password.as_bytes(), user),
        AuthMethod::ScramSha256 | AuthMethod::Trust => {
            postgres_protocol::password::scram_sha_256(password.as_bytes())
        }
    }
}

/// The statements of [`PgClient::setup_roles`].
fn role_statements(su: &Login<'_>, repl: &Login<'_>, repl_exists: bool) -> Vec<String> {
    if su.user == repl.user {
        return vec![format!(
            "ALTER ROLE {} WITH REPLICATION",
            quote_ident(su.user)
        )];
    }
    let password = |l: &Login<'_>| {
        l.password.map(|pw| {
            format!(
                " PASSWORD {}",
                quote_literal(&password_verifier(l.method, l.user, pw))
            )
        })
    };
    let mut statements = Vec::new();
    if let Some(pw) = password(su) {
        statements.push(format!("ALTER ROLE {} WITH{pw}", quote_ident(su.user)));
    }
    let verb = if repl_exists { "ALTER" } else { "CREATE" };
    statements.push(format!(
        "{verb} ROLE {} WITH LOGIN REPLICATION{}",
        quote_ident(repl.user),
        password(repl).unwrap_or_default()
    ));
    statements
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
    }

    /// Timeline 1 left at 100, timeline 2 at 200 (the history of timeline 3).
    fn two_switches() -> Vec<TimelineHistory> {
        [(1, 100), (2, 200)]
            .into_iter()
            .map(|(timeline_id, switch_point)| TimelineHistory {
                timeline_id,
                switch_point,
                reason: String::new(),
            })
            .collect()
    }

    #[test]
    fn timeline_of_a_position() {
        let h = two_switches();
        assert_eq!(timeline_of_position(&h, 3, 50), 1);
        assert_eq!(timeline_of_position(&h, 3, 100), 2);
        assert_eq!(timeline_of_position(&h, 3, 250), 3);
        assert_eq!(timeline_of_position(&[], 1, 250), 1);
    }

    #[test]
    fn a_standby_past_the_fork_point_is_on_the_timeline_it_has_wal_of() {
        // The new master's timeline 3 forked off timeline 2 at 200.
        let h = two_switches();
        let segs = |t: &[u64]| t.iter().copied().collect::<BTreeSet<u64>>();
        // Followed the switch: it holds WAL of timeline 3.
        assert_eq!(replayed_timeline(&h, 3, 250, &segs(&[2, 3])), 3);
        // Received WAL of timeline 2 past 200 and only fetched timeline 3's history: diverged,
        // reported on timeline 2 at 250 so that the sentinel sees it.
        assert_eq!(replayed_timeline(&h, 3, 250, &segs(&[1, 2])), 2);
        // Right at the switch point, before any WAL of timeline 3: timeline 2 at 200 is on
        // the new master's branch all the same.
        assert_eq!(replayed_timeline(&h, 3, 200, &segs(&[2])), 2);
        // Before the fork: as before.
        assert_eq!(replayed_timeline(&h, 3, 150, &segs(&[2])), 2);
        // No segment in pg_wal (WAL restored from an archive): the history decides.
        assert_eq!(replayed_timeline(&h, 3, 250, &segs(&[])), 3);
    }

    #[test]
    fn role_passwords_travel_as_verifiers_never_in_plaintext() {
        let su = Login {
            user: "postgres",
            password: Some("su-secret"),
            method: AuthMethod::Md5,
        };
        let repl = Login {
            user: "repl",
            password: Some("repl-secret"),
            method: AuthMethod::ScramSha256,
        };
        let statements = role_statements(&su, &repl, false);
        assert_eq!(statements.len(), 2, "{statements:?}");
        for s in &statements {
            assert!(!s.contains("secret"), "plaintext password in {s}");
        }
        // md5: "md5" + md5(password || user), what PostgreSQL itself stores.
        assert_eq!(
            password_verifier(AuthMethod::Md5, "postgres", "su-secret"),
            postgres_protocol::password::md5(b"su-secret", "postgres")
        );
        assert!(statements[0].starts_with("ALTER ROLE \"postgres\" WITH PASSWORD 'md5"));
        assert!(
            statements[1].starts_with(
                "CREATE ROLE \"repl\" WITH LOGIN REPLICATION PASSWORD 'SCRAM-SHA-256$4096:"
            ),
            "{}",
            statements[1]
        );
        let again = role_statements(&su, &repl, true);
        assert!(again[1].starts_with("ALTER ROLE \"repl\""));
        let same = Login {
            user: "postgres",
            ..repl
        };
        assert_eq!(
            role_statements(&su, &same, true),
            vec!["ALTER ROLE \"postgres\" WITH REPLICATION"]
        );
    }
}
