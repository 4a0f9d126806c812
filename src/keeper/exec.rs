//! Executing one planned action with `crate::postgres`.

use super::AuthMethod;
use super::error::KeeperError;
use super::plan::{Action, DesiredConfig, Recovery, StopReason};
use super::run::{BASEBACKUP_STALL, Keeper};
use super::state::DbState;
use super::status::{basebackup_status, rewind_status};
use crate::cluster::DbUid;
use crate::postgres::{
    self, HbaParams, Login, ManagedParams, PgClient, PgProcess, RecoverySettings, ReplConn,
    StartOptions, build_parameters, filter_managed, render_pg_hba, synchronous_standby_names,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::time::Instant;

/// In the keeper's data dir, outside PGDATA (which a resync replaces): the replication password
/// the WAL receiver reads, so that it is not in `primary_conninfo`.
const REPLICATION_PASSFILE: &str = "replication.pgpass";

/// Between two looks at whether an archive recovery has ended.
const ARCHIVE_RECOVERY_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Between two copies while the master has not created our slot yet.
const SLOT_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// pg_basebackup's (or its WAL streamer's) complaint that `--slot` names no slot on the master.
fn is_missing_slot(output: &str) -> bool {
    output.contains("replication slot") && output.contains("does not exist")
}

/// How long a master waits for its walsenders to take a new `synchronous_standby_names`
/// before it nudges the standbys (they reload within milliseconds of the SIGHUP).
const RELEASE_SYNC_WAITERS_WITHIN: std::time::Duration = std::time::Duration::from_millis(500);

impl Keeper {
    /// Runs `f` on a fresh connection to the local PostgreSQL, closed (gracefully) before
    /// returning whatever `f` returned.
    async fn on_local<T, E>(&self, f: impl AsyncFnOnce(&PgClient) -> Result<T, E>) -> Result<T, E>
    where
        E: From<crate::postgres::PgError>,
    {
        let client = PgClient::connect(&self.local_conn).await?;
        let res = f(&client).await;
        client.close().await;
        res
    }

    pub(super) async fn execute(&mut self, action: &Action) -> Result<(), KeeperError> {
        match action {
            Action::Stop(reason) => self.stop(*reason).await,
            Action::WipeFailedInit => {
                tracing::error!(keeper = %self.facts.uid, "db failed to initialize or resync; removing its data to start over");
                self.remove_pgdata().await?;
                self.applied = None;
                self.dir.save_db_state(&DbState::default())
            }
            Action::SaveDbState(s) => self.dir.save_db_state(s),
            Action::MarkDbState {
                initializing,
                generation,
            } => {
                let mut s = self.dir.load_db_state()?;
                s.initializing = *initializing;
                if let Some(g) = generation {
                    s.generation = *g;
                }
                self.dir.save_db_state(&s)
            }
            Action::InitDb(new_config) => self.init_db(new_config.as_ref()).await,
            Action::StartTemporary(config) => {
                postgres::write_pg_hba(&self.pgdata, &self.hba_lines(config))?;
                let params = self.parameters(config, None);
                let conf = postgres::write_temp_postgresql_conf(&self.pgdata, &params)?;
                self.start(Some(conf), true).await
            }
            Action::CaptureInitParameters => self.capture_init_parameters().await,
            Action::SetupRoles => self.setup_roles().await,
            Action::Resync {
                host,
                port,
                slot,
                rewind,
            } => {
                if *rewind && self.rewind(host, port, slot).await {
                    return Ok(());
                }
                self.resync(host, port, slot).await
            }
            Action::Restore { command, standby } => self.restore(command, *standby).await,
            Action::ArchiveRecovery {
                config,
                restore_command,
                target,
            } => {
                self.archive_recovery(config, restore_command, target.clone())
                    .await
            }
            Action::WriteConfig(config) => self.write_config(config),
            Action::Start => {
                self.forget_switchover_stop()?;
                let started = self.start(None, false).await;
                if started.is_err() {
                    self.give_up_rewound_data()?;
                }
                started
            }
            Action::PrepareSlots { followers } => {
                self.prepare_slots(followers).await;
                Ok(())
            }
            Action::Promote => self.promote().await,
            Action::StopForSwitchover => self.stop_for_switchover().await,
            Action::Restart => {
                self.stop_postgres("restart").await?;
                self.start(None, false).await
            }
            Action::Reload => {
                // Upstream's stolon_keeper_needs_reload: 1 until a reload succeeds.
                self.metrics.needs_reload(true);
                if let Some(pg) = &self.pg {
                    pg.reload()?;
                }
                self.metrics.needs_reload(false);
                Ok(())
            }
            Action::ReleaseSyncWaiters { standbys } => {
                self.release_sync_waiters(standbys).await;
                Ok(())
            }
            Action::ReconcileSlots {
                followers,
                additional,
            } => {
                self.on_local(async |c| reconcile_slots(c, followers, additional).await)
                    .await
            }
        }
    }

    async fn init_db(
        &mut self,
        new_config: Option<&crate::cluster::NewConfig>,
    ) -> Result<(), KeeperError> {
        tracing::info!(keeper = %self.facts.uid, "initializing the database cluster");
        self.remove_pgdata().await?;
        self.applied = None;
        postgres::initdb(
            &self.bins,
            &self.pgdata,
            &self.cfg.pg_su_username,
            self.cfg.pg_su_password.as_deref(),
            new_config,
        )
        .await?;
        Ok(())
    }

    async fn capture_init_parameters(&mut self) -> Result<(), KeeperError> {
        // Closed before the stop that follows, which would otherwise cut it.
        let params = self
            .on_local(async |c| c.config_file_parameters().await)
            .await?;
        let params = filter_managed(&params);
        let mut s = self.dir.load_db_state()?;
        s.init_pg_parameters = params;
        self.dir.save_db_state(&s)
    }

    async fn setup_roles(&mut self) -> Result<(), KeeperError> {
        tracing::info!(keeper = %self.facts.uid, "setting up roles");
        let cfg = &self.cfg;
        let su = Login {
            user: &cfg.pg_su_username,
            password: cfg.pg_su_password.as_deref(),
            method: cfg.pg_su_auth_method,
        };
        let repl = Login {
            user: &cfg.pg_repl_username,
            password: cfg.pg_repl_password.as_deref(),
            method: cfg.pg_repl_auth_method,
        };
        self.on_local(async |c| c.setup_roles(&su, &repl).await)
            .await?;
        Ok(())
    }

    /// A fresh copy of the master with pg_basebackup; a failure delays the next attempt from
    /// the same source (src/keeper/setbacks.rs).
    /// pg_rewind from the followed db (src/postgres/rewind.rs). True when PGDATA is now a
    /// standby of it; false when the rewind failed, said why (log and STATUS) and left a full
    /// resync to do.
    async fn rewind(&mut self, host: &str, port: &str, slot: &str) -> bool {
        let started = Instant::now();
        let uid = self.facts.uid.clone();
        tracing::info!(keeper = %uid, %host, %port, "resyncing the database cluster with pg_rewind");
        self.applied = None;
        match self.try_rewind(host, port, slot).await {
            Ok(()) => {
                tracing::info!(keeper = %uid, %host, %port, elapsed = ?started.elapsed(), "pg_rewind done");
                true
            }
            Err(e) => {
                tracing::error!(keeper = %uid, %host, %port, error = %e, "pg_rewind failed; falling back to a full resync with pg_basebackup");
                self.work.step(
                    Some(format!("pg_rewind failed ({e}); pg_basebackup starting…")),
                    BASEBACKUP_STALL,
                );
                false
            }
        }
    }

    async fn try_rewind(&mut self, host: &str, port: &str, slot: &str) -> Result<(), KeeperError> {
        let mut source = self.repl_conn(host, port, slot)?;
        // pg_rewind reads the source's files over a normal connection, which takes a
        // superuser; so does the checkpoint.
        source.user = self.cfg.pg_su_username.clone();
        source.password = self.cfg.pg_su_password.clone();
        source.application_name = "stolon-keeper".into();
        postgres::checkpoint(&source, self.timing.request_timeout).await?;
        let work = self.work.clone();
        let mut last_done = None;
        postgres::pg_rewind(&self.bins, &self.pgdata, &source, |done, total| {
            if last_done.is_none_or(|d| done > d) {
                last_done = Some(done);
                work.progress(rewind_status(done, total), BASEBACKUP_STALL);
            }
        })
        .await?;
        postgres::write_standby_signal(&self.pgdata)?;
        let mut state = self.dir.load_db_state()?;
        state.rewound = true;
        self.dir.save_db_state(&state)
    }

    /// A clean stop for a planned switchover (src/sentinel/switchover.rs): a fast shutdown,
    /// whose walsenders send every record to the standbys before they exit, then the shutdown
    /// checkpoint's location recorded in dbstate for the sentinel.
    async fn stop_for_switchover(&mut self) -> Result<(), KeeperError> {
        tracing::info!(keeper = %self.facts.uid, "stopping PostgreSQL cleanly for a planned switchover");
        self.stop_postgres("planned switchover").await?;
        let at = postgres::shutdown_checkpoint(&self.bins, &self.pgdata).await?;
        let mut state = self.dir.load_db_state()?;
        state.switchover_stop_x_log_pos = Some(at);
        self.dir.save_db_state(&state)?;
        tracing::info!(keeper = %self.facts.uid, db = %state.uid, x_log_pos = at, "PostgreSQL stopped for the switchover; its WAL ends at its shutdown checkpoint");
        Ok(())
    }

    /// Once PostgreSQL starts again its WAL goes on: the recorded end no longer holds.
    fn forget_switchover_stop(&mut self) -> Result<(), KeeperError> {
        let mut state = self.dir.load_db_state()?;
        if state.switchover_stop_x_log_pos.take().is_some() {
            self.dir.save_db_state(&state)?;
        }
        Ok(())
    }

    /// After a failed start: rewound data that does not start (it never became consistent,
    /// most likely for want of WAL the followed db no longer has) is marked for a full resync.
    fn give_up_rewound_data(&mut self) -> Result<(), KeeperError> {
        let mut state = self.dir.load_db_state()?;
        if !state.rewound {
            return Ok(());
        }
        tracing::error!(keeper = %self.facts.uid, db = %state.uid, "the rewound data did not start; it is replaced by a full resync");
        state.initializing = true;
        state.rewound = false;
        self.dir.save_db_state(&state)
    }

    async fn resync(&mut self, host: &str, port: &str, slot: &str) -> Result<(), KeeperError> {
        tracing::info!(keeper = %self.facts.uid, %host, %port, %slot, "resyncing the database cluster with pg_basebackup");
        self.remove_pgdata().await?;
        self.applied = None;
        let conn = self.repl_conn(host, port, slot)?;
        let uid = self.facts.uid.clone();
        let base = self.timing.sleep_interval;
        // The sentinel names us to the master and gives us our db in one write: the master's
        // keeper creates our slot on its next iteration, and our copy may ask for it first.
        let slot_deadline = Instant::now() + base * 2 + self.timing.request_timeout;
        let copied = loop {
            let copied = self.basebackup_once(&conn, slot).await;
            match &copied {
                Err(postgres::PgError::CommandFailed { output, .. })
                    if is_missing_slot(output) && Instant::now() < slot_deadline =>
                {
                    tracing::info!(keeper = %uid, %slot, "the master has not created our replication slot yet; copying again shortly");
                    tokio::time::sleep(SLOT_RETRY).await;
                }
                _ => break copied,
            }
        };
        copied.inspect_err(|_| {
            let wait = self
                .setbacks
                .resync_failed(host, port, std::time::Instant::now(), base);
            tracing::warn!(keeper = %uid, %host, %port, "resync failed; the next one from {host}:{port} waits {wait:?}");
        })?;
        self.setbacks.resync_succeeded();
        // A copy of the master is a standby by construction; without the signal the next
        // observation would see a master.
        postgres::write_standby_signal(&self.pgdata)?;
        Ok(())
    }

    async fn basebackup_once(&self, conn: &ReplConn, slot: &str) -> Result<(), postgres::PgError> {
        let uid = &self.facts.uid;
        let work = self.work.clone();
        let mut last_pct = None;
        let mut last_done = None;
        postgres::pg_basebackup(&self.bins, &self.pgdata, conn, Some(slot), |done, total| {
            let pct = (done * 100).checked_div(total).unwrap_or(0) / 10 * 10;
            if last_pct != Some(pct) {
                tracing::info!(keeper = %uid, "pg_basebackup {pct}% ({done}/{total} bytes)");
                last_pct = Some(pct);
            }
            // Only bytes copied count as progress for the watchdog: a copy that hangs must get
            // the keeper restarted.
            if last_done.is_none_or(|d| done > d) {
                last_done = Some(done);
                work.progress(basebackup_status(done, total), BASEBACKUP_STALL);
            }
        })
        .await
    }

    async fn restore(&mut self, command: &str, standby: bool) -> Result<(), KeeperError> {
        // The command is not logged: it may carry credentials (a PGPASSWORD, a cloud key).
        tracing::info!(keeper = %self.facts.uid, "restoring the database cluster with dataRestoreCommand");
        self.remove_pgdata().await?;
        self.applied = None;
        postgres::restore_base_backup(&self.pgdata, command).await?;
        if standby {
            postgres::write_standby_signal(&self.pgdata)?;
        }
        Ok(())
    }

    async fn archive_recovery(
        &mut self,
        config: &DesiredConfig,
        restore_command: &str,
        target: Option<crate::cluster::RecoveryTargetSettings>,
    ) -> Result<(), KeeperError> {
        // restore_command is not logged: it may carry credentials.
        tracing::info!(keeper = %self.facts.uid, ?target, "recovering from the WAL archive");
        postgres::write_pg_hba(&self.pgdata, &self.hba_lines(config))?;
        let recovery = RecoverySettings {
            restore_command: Some(restore_command.to_string()),
            target,
            ..Default::default()
        };
        let params = self.parameters(config, Some(&recovery));
        let conf = postgres::write_temp_postgresql_conf(&self.pgdata, &params)?;
        postgres::write_recovery_signal(&self.pgdata)?;
        self.start(Some(conf), true).await?;
        let deadline = Instant::now() + self.timing.sync_timeout;
        loop {
            let in_recovery = self.on_local(async |c| c.is_in_recovery().await).await?;
            if !in_recovery {
                tracing::info!(keeper = %self.facts.uid, "archive recovery ended: promoted");
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(KeeperError::Config(format!(
                    "archive recovery did not end within syncTimeout ({:?}): check restore_command and the recovery target in the keeper's PostgreSQL log",
                    self.timing.sync_timeout
                )));
            }
            tokio::time::sleep(ARCHIVE_RECOVERY_POLL).await;
        }
    }

    /// Best effort: the slots are created after the promotion anyway.
    async fn prepare_slots(&mut self, followers: &[DbUid]) {
        // Slots are named after the follower db uids.
        let wanted = followers.iter().map(DbUid::to_string).collect();
        let created = self
            .on_local(async |c| c.reconcile_replication_slots(&wanted).await)
            .await;
        if let Err(e) = created {
            tracing::warn!(keeper = %self.facts.uid, error = %e, "cannot create the standbys' replication slots before the promotion; they are created after it");
        }
    }

    async fn promote(&mut self) -> Result<(), KeeperError> {
        tracing::warn!(keeper = %self.facts.uid, "promoting to master");
        self.publish_before_promotion().await?;
        // From the first write it may take, a master is fenced.
        self.fence.arm();
        postgres::promote(&self.bins, &self.pgdata).await?;
        let within = self.timing.db_wait_ready_timeout;
        self.on_local(async |c| c.wait_promoted(within).await)
            .await?;
        tracing::warn!(keeper = %self.facts.uid, "promoted: now master");
        // Tell the cluster now: the sentinel waits for this to move the proxies.
        self.shared.publish_now();
        Ok(())
    }

    /// Best effort: without it, waiting commits are released at the standbys' next
    /// confirmation.
    async fn release_sync_waiters(&mut self, standbys: &[DbUid]) {
        let names = standbys
            .iter()
            .map(|u| postgres::stolon_name(u.as_str()))
            .collect();
        let released = self
            .on_local(async |c| {
                c.release_sync_waiters(&names, RELEASE_SYNC_WAITERS_WITHIN)
                    .await
            })
            .await;
        if let Err(e) = released {
            tracing::warn!(keeper = %self.facts.uid, error = %e, "cannot make the synchronous standbys confirm; waiting commits are released at their next confirmation");
        }
    }

    /// A promoted master is fenced from its last publication on: with none recent (a store
    /// member just went away), the fence would kill it at once. Asks for one and waits for it,
    /// within requestTimeout.
    async fn publish_before_promotion(&self) -> Result<(), KeeperError> {
        let left = self.timing.fence.publish_every;
        let deadline = tokio::time::Instant::now() + self.timing.request_timeout;
        while !self.fence.fresh_for(left) {
            self.shared.publish_now();
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero()
                || tokio::time::timeout(remaining, self.shared.wait_published())
                    .await
                    .is_err()
            {
                return Err(KeeperError::PromoteWithoutStore {
                    silent: self.fence.silent_for().unwrap_or_default(),
                });
            }
        }
        Ok(())
    }

    /// Records an unexpected PostgreSQL exit (the loop calls it where it notices one) and
    /// says so once when it makes a crash loop. A kill by the fence is no crash: the store was
    /// out of reach, and PostgreSQL starts again as soon as it is back.
    pub(super) fn note_postgres_exit(&mut self, pid: u32) {
        if self.fence.killed(pid) {
            self.metrics.fenced();
            return;
        }
        let now = std::time::Instant::now();
        if let Some(until) = self.setbacks.postgres_exited(now) {
            tracing::error!(
                keeper = %self.facts.uid,
                exits = self.setbacks.recent_exits(now),
                window = ?super::setbacks::CRASH_WINDOW,
                "PostgreSQL keeps exiting unexpectedly: leaving it stopped for {:?} so that it is reported unhealthy and the sentinel can fail over",
                until.saturating_duration_since(now)
            );
        }
    }

    /// Off the loop's thread: removing a large PGDATA takes a while, and the loop must keep
    /// ticking (the systemd watchdog) meanwhile.
    async fn remove_pgdata(&self) -> Result<(), KeeperError> {
        let pgdata = self.pgdata.path().to_path_buf();
        match tokio::task::spawn_blocking(move || postgres::remove_pgdata(&pgdata)).await {
            Ok(res) => Ok(res?),
            Err(e) => Err(KeeperError::DataDir {
                path: self.pgdata.path().to_path_buf(),
                reason: format!("removing the data directory did not finish: {e}"),
            }),
        }
    }

    async fn stop(&mut self, reason: StopReason) -> Result<(), KeeperError> {
        if reason == StopReason::Fencing {
            tracing::error!(
                keeper = %self.facts.uid,
                fence_after = ?self.timing.fence_after(),
                "FENCING: the store has been unreachable too long while this keeper runs the master; stopping PostgreSQL so a new master can be elected safely"
            );
        }
        let why = match reason {
            StopReason::NoDbAssigned => "no db assigned",
            StopReason::Deposed => "another master was elected in place of this one",
            StopReason::BootUuidMismatch => {
                "the sentinel has not seen this keeper process yet (bootUUID differs)"
            }
            StopReason::Fencing => "fencing",
            StopReason::Demoted => {
                "cannot move from master role to standby role; stopping the old master"
            }
            StopReason::Reinitialize => "reinitializing the data",
            StopReason::InitDone => "initialization done",
        };
        // A master that lost its role stops without a shutdown checkpoint: at once (one
        // writable master at most), and keeping the WAL back to the last checkpoint it shares
        // with the new master, which pg_rewind needs (src/postgres/rewind.rs); a checkpoint
        // would remove it. Its data is rewound or replaced next anyway.
        if matches!(reason, StopReason::Deposed | StopReason::Demoted) {
            tracing::warn!(keeper = %self.facts.uid, "stopping the old master at once: {why}");
        }
        if reason == StopReason::Fencing && self.pg.is_some() {
            self.metrics.fenced();
        }
        if matches!(
            reason,
            StopReason::Fencing | StopReason::Deposed | StopReason::Demoted
        ) {
            return self.stop_postgres_immediately().await;
        }
        self.stop_postgres(why).await
    }

    /// Starts postgres as our child; a master (or a temporary start) is waited on until it
    /// accepts connections, a standby only until it is up (it may take long to be consistent).
    async fn start(
        &mut self,
        config_file: Option<PathBuf>,
        temporary: bool,
    ) -> Result<(), KeeperError> {
        // A stray postmaster must never run next to the one we start.
        self.stop_postgres("before start").await?;
        postgres::disable_alter_system(&self.pgdata)?;
        let opts = StartOptions {
            config_file,
            socket_dir: self.local_conn.socket_dir.clone(),
            timeout: self.timing.db_wait_ready_timeout,
        };
        let mut pg = PgProcess::start(&self.bins, &self.pgdata, &opts).await?;
        let standby = postgres::local_role(&self.pgdata) == postgres::LocalRole::Standby;
        if (temporary || !standby)
            && let Err(e) = pg.wait_ready(self.timing.db_wait_ready_timeout).await
        {
            let _ = pg.stop_fast(self.timing.loop_stop()).await;
            return Err(e.into());
        }
        tracing::info!(keeper = %self.facts.uid, pid = pg.pid(), temporary, standby, "postgres started");
        self.pg = Some(pg);
        self.pg_started_at = Some(Instant::now());
        Ok(())
    }

    fn write_config(&mut self, config: &DesiredConfig) -> Result<(), KeeperError> {
        let recovery = match &config.recovery {
            None => None,
            Some(Recovery::Follow {
                host, port, slot, ..
            }) => {
                let conn = self.repl_conn(host, port, slot)?;
                let passfile = self.dir.root().join(REPLICATION_PASSFILE);
                postgres::write_passfile(&self.pgdata, &passfile, &conn)?;
                let passfile = conn.password.is_some().then_some(passfile.as_path());
                Some(RecoverySettings {
                    primary_conninfo: Some(conn.conninfo(passfile)),
                    primary_slot_name: Some(slot.clone()),
                    ..Default::default()
                })
            }
            Some(Recovery::External { standby, archive }) => Some(RecoverySettings {
                primary_conninfo: standby.as_ref().map(|s| s.primary_conninfo.clone()),
                primary_slot_name: standby.as_ref().map(|s| s.primary_slot_name.clone()),
                recovery_min_apply_delay: standby
                    .as_ref()
                    .map(|s| s.recovery_min_apply_delay.clone()),
                restore_command: archive.as_ref().map(|a| a.restore_command.clone()),
                ..Default::default()
            }),
        };
        let params = self.parameters(config, recovery.as_ref());
        // Forget what was applied first: a failure half way must cause a full rewrite.
        self.applied = None;
        postgres::write_postgresql_conf(&self.pgdata, &params)?;
        postgres::write_pg_hba(&self.pgdata, &self.hba_lines(config))?;
        if recovery.is_some() {
            postgres::write_standby_signal(&self.pgdata)?;
        }
        self.applied = Some(config.clone());
        Ok(())
    }

    fn parameters(
        &self,
        config: &DesiredConfig,
        recovery: Option<&RecoverySettings>,
    ) -> BTreeMap<String, String> {
        let managed = ManagedParams {
            listen_address: self.cfg.pg_listen_address.clone(),
            port: self.cfg.pg_port,
            socket_dir: self.local_conn.socket_dir.display().to_string(),
            max_standbys: config.max_standbys,
            additional_wal_senders: config.additional_wal_senders,
            use_pg_rewind: config.use_pg_rewind,
            synchronous_standby_names: synchronous_standby_names(
                &config.synchronous_standbys,
                &config.external_synchronous_standbys,
            ),
            scram: self.cfg.pg_su_auth_method == AuthMethod::ScramSha256
                || self.cfg.pg_repl_auth_method == AuthMethod::ScramSha256,
        };
        build_parameters(
            None,
            &self.accepted_parameters(&config.parameters),
            &managed,
            recovery,
        )
    }

    /// The spec's parameters this PostgreSQL accepts; any other is logged and left out, so that
    /// a typo in pgParameters never keeps the server from starting.
    fn accepted_parameters(&self, params: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        if self.server_parameters.is_empty() {
            return params.clone();
        }
        params
            .iter()
            .filter(|(name, value)| match self.server_parameters.check(name, value) {
                Ok(()) => true,
                Err(why) => {
                    tracing::error!(keeper = %self.facts.uid, parameter = %name, "pgParameters: {why}; left out of postgresql.conf");
                    false
                }
            })
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    }

    fn hba_lines(&self, config: &DesiredConfig) -> Vec<String> {
        render_pg_hba(&HbaParams {
            su_username: &self.cfg.pg_su_username,
            su_auth: self.cfg.pg_su_auth_method,
            repl_username: &self.cfg.pg_repl_username,
            repl_auth: self.cfg.pg_repl_auth_method,
            access_mode: config.hba.access_mode,
            is_master: config.hba.master_type,
            other_db_addresses: &config.hba.other_db_addresses,
            spec_hba: config.hba.user_rules.as_deref(),
            trust_networks: &self.cfg.pg_trust_networks,
            internal_only: config.hba.internal_only,
        })
    }

    fn repl_conn(&self, host: &str, port: &str, slot: &str) -> Result<ReplConn, KeeperError> {
        let port = port.parse::<u16>().map_err(|_| {
            KeeperError::Config(format!(
                "followed db advertises an invalid port {port:?} in the cluster data"
            ))
        })?;
        Ok(ReplConn {
            host: host.to_string(),
            port,
            user: self.cfg.pg_repl_username.clone(),
            password: self.cfg.pg_repl_password.clone(),
            application_name: slot.to_string(),
        })
    }
}

async fn reconcile_slots(
    client: &PgClient,
    followers: &[DbUid],
    additional: &[String],
) -> Result<(), KeeperError> {
    // Additional names cannot clash with db uids' slots: validation refuses the `stolon_`
    // prefix, and db uids are generated.
    let wanted = followers
        .iter()
        .map(DbUid::to_string)
        .chain(additional.iter().cloned())
        .collect();
    Ok(client.reconcile_replication_slots(&wanted).await?)
}

#[cfg(test)]
mod tests {
    use super::is_missing_slot;

    #[test]
    fn a_copy_refused_for_want_of_our_slot_is_told_apart() {
        assert!(is_missing_slot(
            "pg_basebackup: error: could not send replication command \"START_REPLICATION\": ERROR:  replication slot \"stolon_3f2a\" does not exist"
        ));
        assert!(!is_missing_slot(
            "pg_basebackup: error: connection to server at \"10.0.0.2\", port 5432 failed: Connection refused"
        ));
    }
}
