//! PURE: what the keeper must do to make its local PostgreSQL match the db the sentinel assigned
//! it. No I/O, no clock: the loop observes the local state, calls [`plan`], and
//! executes the actions in order, stopping at the first failure (the next iteration plans again
//! from what is then on disk).
//!
//! The planner simulates the effect of each action it emits on a copy of the local state, so one
//! call yields the whole path to convergence (e.g. initdb, temporary start, roles, stop, write
//! config, start, slots, mark converged) and the later steps are decided on the state the
//! earlier ones leave.

use super::state::DbState;
use crate::cluster::{
    ArchiveRecoverySettings, ClusterData, Db, DbInitMode, DbRole, DbUid, FollowType, Generation,
    KeeperUid, NewConfig, RecoveryTargetSettings, StandbySettings, SuReplAccessMode,
};
use std::collections::BTreeMap;

/// The role PGDATA would start in: standby iff `standby.signal` exists (PostgreSQL ≥ 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalRole {
    /// PGDATA is not initialized.
    None,
    Master,
    Standby,
}

/// What the loop observed locally before planning.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalState {
    pub db_state: DbState,
    pub initialized: bool,
    pub role: LocalRole,
    pub running: bool,
    /// The config this process last wrote into PGDATA. `None` until the first write: the keeper
    /// stops any instance it did not start, so a running instance always has `Some` here unless
    /// a write failed half way, and then rewriting is the right thing anyway.
    pub applied: Option<DesiredConfig>,
    /// Standbys PostgreSQL reports in sync right now (db uids); `None` if unknown.
    pub in_sync_standbys: Option<Vec<DbUid>>,
    /// A changed parameter waits for a restart (`pg_settings.pending_restart`).
    pub pending_restart: bool,
    /// Major version of the PostgreSQL binaries the instance runs with (`None`: unknown). It
    /// decides whether new recovery settings need a restart.
    pub pg_major: Option<i32>,
    /// Steps the keeper holds back after repeated failures (`super::setbacks`).
    pub holds: Holds,
}

/// What the keeper must not do yet because it failed too often lately. The loop derives it
/// from its clock (`super::setbacks::Setbacks::holds`); the plan only obeys it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holds {
    /// PostgreSQL exited unexpectedly too often lately: leave it stopped. A master that kept
    /// being restarted would be reported healthy between crashes and never failed over; a
    /// stopped one is reported unhealthy, so the sentinel fails over after failInterval.
    pub crash_loop: bool,
    /// The last resync from this followed db failed: wait before the next pg_basebackup.
    pub resync: Option<ResyncHold>,
}

/// A resync source in back-off: the next pg_basebackup from `host:port` waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncHold {
    pub host: String,
    pub port: String,
    /// Failed resyncs in a row from that source.
    pub failures: u32,
}

/// Why a step is held back ([`WaitReason::Held`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    CrashLoop,
    ResyncBackoff(ResyncHold),
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::CrashLoop => write!(
                f,
                "PostgreSQL keeps exiting unexpectedly; it stays stopped for a while so that the sentinel can fail over"
            ),
            Hold::ResyncBackoff(r) => write!(
                f,
                "resync from {}:{} failed {} time(s) in a row; waiting before retrying",
                r.host, r.port, r.failures
            ),
        }
    }
}

/// First major version whose `primary_conninfo` and `primary_slot_name` take effect on a
/// reload (they became `sighup` parameters in PostgreSQL 13).
pub const RELOADABLE_RECOVERY_SINCE: i32 = 13;

/// Facts about this keeper process that the plan needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeeperFacts {
    pub uid: KeeperUid,
    pub boot_uuid: String,
}

/// Everything that goes into postgresql.conf, pg_hba.conf and the standby settings. The
/// executor renders it with `crate::postgres`; the planner compares it with what was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredConfig {
    /// User parameters: the captured initial ones (includePreviousConfig) overridden by the db
    /// spec's. Managed names are overridden by the renderer.
    pub parameters: BTreeMap<String, String>,
    pub max_standbys: u16,
    pub additional_wal_senders: u16,
    pub use_pg_rewind: bool,
    /// Db uids that must acknowledge commits (empty: asynchronous), sorted.
    pub synchronous_standbys: Vec<DbUid>,
    pub external_synchronous_standbys: Vec<String>,
    pub hba: HbaConfig,
    /// `Some` for a standby: what to follow. `None` leaves any `standby.signal` alone (only a
    /// promotion removes it), so a stopped standby that must become master first starts as a
    /// standby and is then promoted onto a new timeline.
    pub recovery: Option<Recovery>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaConfig {
    pub access_mode: SuReplAccessMode,
    /// The db others replicate from (master, or a standby cluster's leader): strict mode
    /// opens su/replication access only there.
    pub master_type: bool,
    /// Strict mode: the addresses of the other dbs, allowed for su and replication (sorted).
    pub other_db_addresses: Vec<String>,
    /// The spec's pgHBA lines; `None` means the default open rules.
    pub user_rules: Option<Vec<String>>,
    /// Only the internal (su/replication) rules: a sync-replication master that just started
    /// keeps clients out until its synchronous standbys are in sync again.
    pub internal_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Stream from a db of this cluster.
    Follow {
        db_uid: DbUid,
        host: String,
        port: String,
        /// `stolon_<our db uid>`: the slot the master keeps for us and our application_name.
        slot: String,
    },
    /// Standby cluster: follow a database outside the cluster, by streaming (standby
    /// settings), from its WAL archive (restore_command), or both.
    External {
        standby: Option<StandbySettings>,
        archive: Option<ArchiveRecoverySettings>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    NoDbAssigned,
    /// A running master whose db is gone: another master was elected in its place.
    Deposed,
    /// The sentinel has not seen this keeper process yet: an old master must not come back
    /// before the sentinel decided what it is.
    BootUuidMismatch,
    /// The store has been unreachable too long: another master may be elected meanwhile.
    Fencing,
    /// The sentinel made this former master a standby: it must stop taking writes.
    Demoted,
    /// Before wiping, initializing or resyncing PGDATA.
    Reinitialize,
    /// After the temporary start of an initialization.
    InitDone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Stop(StopReason),
    /// A previous init or resync crashed half way ("db failed to initialize or resync"):
    /// remove PGDATA and reset dbstate.
    WipeFailedInit,
    /// Replace dbstate (taking a new db: uid set, generation 0).
    SaveDbState(DbState),
    /// Update dbstate on disk, keeping what actions stored in it meanwhile (the captured
    /// initial parameters): the data is complete, and the generation it converged to, if any.
    MarkDbState {
        initializing: bool,
        generation: Option<Generation>,
    },
    /// Remove PGDATA and run initdb with the superuser.
    InitDb(Option<NewConfig>),
    /// Start with a temporary config that includes the initdb/existing postgresql.conf and
    /// then this one, and wait until it accepts connections.
    StartTemporary(DesiredConfig),
    /// Save the config-file parameters into dbstate.InitPGParameters (includePreviousConfig).
    CaptureInitParameters,
    /// Superuser password and replication role.
    SetupRoles,
    /// Make PGDATA a copy of the followed db, streaming from our slot: with `rewind`, pg_rewind
    /// what is there first (usePgrewind, and PGDATA holds a db of its own); otherwise, or when
    /// the rewind fails, remove PGDATA and pg_basebackup it.
    Resync {
        host: String,
        port: String,
        slot: String,
        rewind: bool,
    },
    /// Remove PGDATA and run the spec's `dataRestoreCommand` (`%d`: PGDATA) to bring a base
    /// backup back (initMode pitr). A standby cluster's head gets `standby.signal`: it recovers
    /// by following the external primary or archive.
    Restore {
        command: String,
        standby: bool,
    },
    /// Start with a temporary config (as `StartTemporary`) plus archive recovery
    /// (`recovery.signal`, `restore_command` and the targets, `recovery_target_action =
    /// promote`), and wait until the recovery ended with a promotion (syncTimeout, as upstream).
    ArchiveRecovery {
        config: DesiredConfig,
        restore_command: String,
        target: Option<RecoveryTargetSettings>,
    },
    WriteConfig(DesiredConfig),
    /// Start the instance (as a child) and wait until it accepts connections.
    Start,
    /// Create the followers' `stolon_*` slots while still a standby, just before a promotion
    /// (best effort: a failure is logged and the promotion goes on; `ReconcileSlots` after it
    /// makes them exact). The standbys told to follow us connect at once, before the promotion
    /// is over: with their slots there they stream from us and follow the new timeline
    /// without waiting `wal_retrieve_retry_interval` after a refusal.
    PrepareSlots {
        followers: Vec<DbUid>,
    },
    Promote,
    /// A planned switchover: shut PostgreSQL down cleanly (a fast shutdown, which ends with a
    /// checkpoint and waits for the standbys to receive all WAL) and record in dbstate where
    /// its WAL ends, which the keeper then reports.
    StopForSwitchover,
    Restart,
    /// Re-read postgresql.conf and pg_hba.conf. A parameter that needs a restart shows up as
    /// `pending_restart` on the next observation.
    Reload,
    /// On a master whose synchronous standbys just changed (after `Reload`): make the named
    /// standbys confirm at once, so commits already waiting for them are released (best
    /// effort). Without it a commit made while the sentinel had not yet named a standby (the
    /// fake standby right after a promotion) waited up to `wal_receiver_status_interval`
    /// when nothing else was written.
    ReleaseSyncWaiters {
        standbys: Vec<DbUid>,
    },
    /// Make the `stolon_*` physical slots exactly `stolon_<f>` for each follower db uid `f`
    /// and `stolon_<a>` for each of the spec's additional slots `a` (upstream's names, so a
    /// migrated cluster keeps its slots): missing ones are created, the others dropped.
    /// Slots not named `stolon_*` are never touched.
    ReconcileSlots {
        followers: Vec<DbUid>,
        additional: Vec<String>,
    },
}

impl Action {
    /// Whether it changes what PostgreSQL runs as or follows (its role, its configuration,
    /// whether it runs), as opposed to bookkeeping that a converged db repeats.
    pub fn changes_postgres(&self) -> bool {
        !matches!(
            self,
            Action::SaveDbState(_)
                | Action::MarkDbState { .. }
                | Action::ReconcileSlots { .. }
                | Action::PrepareSlots { .. }
                | Action::ReleaseSyncWaiters { .. }
        )
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Stop(_) => "stop",
            Action::WipeFailedInit => "wipe failed init",
            Action::SaveDbState(_) => "save dbstate",
            Action::MarkDbState { .. } => "update dbstate",
            Action::InitDb(_) => "initdb",
            Action::StartTemporary(_) => "temporary start",
            Action::CaptureInitParameters => "capture initial parameters",
            Action::SetupRoles => "setup roles",
            Action::Resync { .. } => "resync",
            Action::Restore { .. } => "restore",
            Action::ArchiveRecovery { .. } => "archive recovery",
            Action::WriteConfig(_) => "write config",
            Action::Start => "start",
            Action::PrepareSlots { .. } => "create replication slots before promotion",
            Action::Promote => "promote",
            Action::StopForSwitchover => "stop for switchover",
            Action::Restart => "restart",
            Action::Reload => "reload",
            Action::ReleaseSyncWaiters { .. } => "release synchronous commits",
            Action::ReconcileSlots { .. } => "reconcile replication slots",
        }
    }
}

/// Why the plan stops before convergence; the loop logs it (info) and tries again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    NoClusterData,
    KeeperNotInClusterData,
    NoDbAssigned,
    BootUuidMismatch,
    StoreUnreachable,
    RoleUndefined,
    /// The followed db has not published its address yet.
    FollowedDbAddressUnknown(DbUid),
    /// A start or a resync is held back after repeated failures.
    Held(Hold),
}

/// A state the keeper cannot fix by itself; the loop logs it (error) and tries again later,
/// when the sentinel may have decided otherwise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "cannot move from master role to standby role: waiting for the sentinel to assign a new db"
    )]
    MasterToStandby,
    #[error(
        "local db uid {local:?} differs from the assigned db {assigned:?} but its init mode is none: the keeper data was lost or replaced; check that --data-dir is on a persistent volume and that its state files were not removed"
    )]
    LostDb { local: DbUid, assigned: DbUid },
    #[error(
        "db {0} is a standby cluster's head to be created by resync from the external primary, which this stolon does not implement yet; use initMode pitr"
    )]
    ExternalResyncUnsupported(DbUid),
    #[error("db {0} has init mode pitr but the cluster spec has no pitrConfig.dataRestoreCommand")]
    NoDataRestoreCommand(DbUid),
    #[error("db {0} has init mode existing but PGDATA is not initialized")]
    ExistingNotInitialized(DbUid),
    #[error("db {0} must be master but PGDATA is not initialized")]
    MasterNotInitialized(DbUid),
    #[error("db {0} must be a standby but PGDATA is not initialized")]
    StandbyNotInitialized(DbUid),
    #[error("db {db} follows db {followed}, which is not in the cluster data")]
    FollowedDbMissing { db: DbUid, followed: DbUid },
    #[error("db {0} is a standby without a follow config")]
    NoFollowConfig(DbUid),
    #[error(
        "db {0} follows an external database without standbySettings.primaryConninfo or archiveRecoverySettings.restoreCommand"
    )]
    NoStandbySettings(DbUid),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanEnd {
    /// After the actions the db is at `generation` (already recorded in dbstate by them).
    Converged {
        db_uid: DbUid,
        generation: Generation,
    },
    Wait(WaitReason),
    Error(PlanError),
    /// PGDATA was (re)made: plan again at once from what is now on disk (e.g. the parameters
    /// captured from initdb's config) rather than from a guess of it.
    Replan,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub end: PlanEnd,
    /// The local state the planner expects once every action succeeded.
    pub expected: LocalState,
}

/// `stolon_<uid>`: the replication slot and application_name of a db.
pub fn stolon_name(uid: &DbUid) -> String {
    format!("stolon_{uid}")
}

/// Computes the actions that converge the local instance. `fenced` is true when the store has
/// been unreachable long enough that the sentinel may already be electing another master.
pub fn plan(me: &KeeperFacts, cd: Option<&ClusterData>, local: &LocalState, fenced: bool) -> Plan {
    let mut p = Planner {
        actions: Vec::new(),
        sim: local.clone(),
    };
    let end = p.run(me, cd, fenced);
    Plan {
        actions: p.actions,
        end,
        expected: p.sim,
    }
}

struct Planner {
    actions: Vec<Action>,
    sim: LocalState,
}

impl Planner {
    fn push(&mut self, a: Action) {
        match &a {
            Action::Stop(_) => self.sim.running = false,
            Action::StopForSwitchover => {
                self.sim.running = false;
                // The real position is known only once it stopped; the plan needs only its
                // presence.
                self.sim.db_state.switchover_stop_x_log_pos = Some(0);
            }
            Action::WipeFailedInit => {
                self.sim.db_state = DbState::default();
                self.sim.initialized = false;
                self.sim.role = LocalRole::None;
                self.sim.applied = None;
            }
            Action::SaveDbState(s) => self.sim.db_state = s.clone(),
            Action::MarkDbState {
                initializing,
                generation,
            } => {
                self.sim.db_state.initializing = *initializing;
                if let Some(g) = generation {
                    self.sim.db_state.generation = *g;
                }
            }
            Action::InitDb(_) => {
                self.sim.initialized = true;
                self.sim.role = LocalRole::Master;
                self.sim.applied = None;
            }
            Action::Start => {
                self.sim.running = true;
                self.sim.db_state.switchover_stop_x_log_pos = None;
            }
            Action::StartTemporary(_) | Action::ArchiveRecovery { .. } | Action::Restart => {
                self.sim.running = true
            }
            Action::Restore { standby, .. } => {
                self.sim.initialized = true;
                self.sim.role = if *standby {
                    LocalRole::Standby
                } else {
                    LocalRole::Master
                };
                self.sim.applied = None;
            }
            Action::Resync { .. } => {
                self.sim.initialized = true;
                self.sim.role = LocalRole::Standby;
                self.sim.applied = None;
            }
            Action::WriteConfig(c) => self.sim.applied = Some(c.clone()),
            Action::Promote => self.sim.role = LocalRole::Master,
            Action::CaptureInitParameters
            | Action::SetupRoles
            | Action::Reload
            | Action::ReleaseSyncWaiters { .. }
            | Action::PrepareSlots { .. }
            | Action::ReconcileSlots { .. } => {}
        }
        self.actions.push(a);
    }

    fn stop_if_running(&mut self, why: StopReason) {
        if self.sim.running {
            self.push(Action::Stop(why));
        }
    }

    fn run(&mut self, me: &KeeperFacts, cd: Option<&ClusterData>, fenced: bool) -> PlanEnd {
        if fenced {
            // A standby may keep running: it takes no writes. A master must not outlive its
            // lease on the store (one master, or none).
            if self.sim.role == LocalRole::Master {
                self.stop_if_running(StopReason::Fencing);
            }
            return PlanEnd::Wait(WaitReason::StoreUnreachable);
        }
        // Upstream leaves a running instance alone while there is no cluster data or no entry
        // for us: the keeper stops any instance it did not start, so whatever runs was started
        // from a cluster data this keeper already acted on.
        let Some(cd) = cd else {
            return PlanEnd::Wait(WaitReason::NoClusterData);
        };
        let Some(keeper) = cd.keepers.get(&me.uid) else {
            return PlanEnd::Wait(WaitReason::KeeperNotInClusterData);
        };
        let Some(db) = cd.db_of_keeper(&me.uid) else {
            self.stop_if_running(if self.sim.role == LocalRole::Master {
                StopReason::Deposed
            } else {
                StopReason::NoDbAssigned
            });
            return PlanEnd::Wait(WaitReason::NoDbAssigned);
        };
        if keeper.status.boot_uuid != me.boot_uuid {
            self.stop_if_running(StopReason::BootUuidMismatch);
            return PlanEnd::Wait(WaitReason::BootUuidMismatch);
        }
        if self.sim.db_state.initializing {
            self.stop_if_running(StopReason::Reinitialize);
            self.push(Action::WipeFailedInit);
        }
        if self.sim.db_state.uid != db.uid {
            return match self.take_db(cd, db) {
                Ok(()) => {
                    // The data is complete: from here a crash must not wipe it. (Upstream
                    // keeps Initializing until the first convergence, in the same pass.)
                    if self.sim.db_state.initializing {
                        self.push(Action::MarkDbState {
                            initializing: false,
                            generation: None,
                        });
                    }
                    PlanEnd::Replan
                }
                Err(end) => end,
            };
        }
        match db.spec.role {
            // A deposed master (src/sentinel/normal.rs): stopped until the sentinel either
            // makes it master again or replaces its db.
            DbRole::Undefined => {
                self.stop_if_running(StopReason::Deposed);
                PlanEnd::Wait(WaitReason::RoleUndefined)
            }
            DbRole::Master => self.master(cd, db),
            DbRole::Standby => self.standby(cd, db),
        }
    }

    /// Makes PGDATA hold `db` according to its init mode.
    fn take_db(&mut self, cd: &ClusterData, db: &Db) -> Result<(), PlanEnd> {
        let fresh = |initializing| DbState {
            uid: db.uid.clone(),
            generation: Generation::ZERO,
            initializing,
            rewound: false,
            switchover_stop_x_log_pos: None,
            init_pg_parameters: BTreeMap::new(),
        };
        match db.spec.init_mode {
            DbInitMode::New => {
                // Saved first so a crash from here on is detected and the half-made data wiped.
                self.push(Action::SaveDbState(fresh(true)));
                self.stop_if_running(StopReason::Reinitialize);
                self.push(Action::InitDb(db.spec.new_config.clone()));
                self.temporary_start(cd, db);
                self.push(Action::SetupRoles);
                self.push(Action::Stop(StopReason::InitDone));
            }
            DbInitMode::Existing => {
                if !self.sim.initialized {
                    return Err(PlanEnd::Error(PlanError::ExistingNotInitialized(
                        db.uid.clone(),
                    )));
                }
                // Not initializing: a crash must never wipe data we did not create.
                self.push(Action::SaveDbState(fresh(false)));
                self.stop_if_running(StopReason::Reinitialize);
                self.temporary_start(cd, db);
                self.push(Action::Stop(StopReason::InitDone));
            }
            // A standby whose data directory was emptied (wiped, a new disk): its data is a
            // copy of the master's, so copying it again loses nothing. ⚠ Upstream stops at
            // "the keeper data was lost" until an operator removes the keeper. Data that is
            // there but belongs to another db is never overwritten (LostDb below): the
            // data dir may be the wrong one.
            DbInitMode::None
                if !self.sim.initialized
                    && db.spec.role == DbRole::Standby
                    && db
                        .spec
                        .follow_config
                        .as_ref()
                        .is_some_and(|f| f.follow_type == FollowType::Internal) =>
            {
                self.resync(cd, db, fresh(true))?;
            }
            DbInitMode::Resync => self.resync(cd, db, fresh(true))?,
            DbInitMode::Pitr => {
                let Some(pitr) = db
                    .spec
                    .pitr_config
                    .as_ref()
                    .filter(|p| !p.data_restore_command.is_empty())
                else {
                    return Err(PlanEnd::Error(PlanError::NoDataRestoreCommand(
                        db.uid.clone(),
                    )));
                };
                let standby = db.spec.role == DbRole::Standby;
                self.push(Action::SaveDbState(fresh(true)));
                self.stop_if_running(StopReason::Reinitialize);
                self.push(Action::Restore {
                    command: pitr.data_restore_command.clone(),
                    standby,
                });
                // A standby cluster's head recovers as a standby (the standby path follows);
                // a master replays the archive up to its target and is promoted first.
                if !standby {
                    let config = desired_config(cd, db, &self.sim, None);
                    self.push(Action::ArchiveRecovery {
                        config,
                        restore_command: pitr
                            .archive_recovery_settings
                            .as_ref()
                            .map(|a| a.restore_command.clone())
                            .unwrap_or_default(),
                        target: pitr.recovery_target_settings.clone(),
                    });
                    if db.spec.include_previous_config {
                        self.push(Action::CaptureInitParameters);
                    }
                    // The backup's roles may predate this cluster's passwords.
                    self.push(Action::SetupRoles);
                    self.push(Action::Stop(StopReason::InitDone));
                }
            }
            DbInitMode::None => {
                return Err(PlanEnd::Error(PlanError::LostDb {
                    local: self.sim.db_state.uid.clone(),
                    assigned: db.uid.clone(),
                }));
            }
        }
        Ok(())
    }

    /// Makes PGDATA a copy of the followed db (`DbInitMode::Resync`), recorded as `state`.
    fn resync(&mut self, cd: &ClusterData, db: &Db, state: DbState) -> Result<(), PlanEnd> {
        let target = self.follow_target(cd, db)?;
        let Recovery::Follow {
            host, port, slot, ..
        } = target
        else {
            return Err(PlanEnd::Error(PlanError::ExternalResyncUnsupported(
                db.uid.clone(),
            )));
        };
        // Back off before copying from the same source again: a failing
        // pg_basebackup retried every sleepInterval hammers the master (a fast
        // checkpoint and a full copy each time).
        if let Some(hold) = self
            .sim
            .holds
            .resync
            .as_ref()
            .filter(|h| h.host == host && h.port == port)
        {
            return Err(PlanEnd::Wait(WaitReason::Held(Hold::ResyncBackoff(
                hold.clone(),
            ))));
        }
        // What PGDATA holds now (a failed master, a standby that went ahead on the
        // old timeline, a standby the master's WAL left behind): pg_rewind copies only
        // what differs. Not after a failed init (wiped above), nor when the last
        // rewind never got WAL flowing.
        let rewind = db.spec.use_pg_rewind && self.sim.initialized && !self.sim.db_state.rewound;
        self.push(Action::SaveDbState(state));
        self.stop_if_running(StopReason::Reinitialize);
        self.push(Action::Resync {
            host,
            port,
            slot,
            rewind,
        });
        Ok(())
    }

    fn temporary_start(&mut self, cd: &ClusterData, db: &Db) {
        let config = desired_config(cd, db, &self.sim, None);
        self.push(Action::StartTemporary(config));
        if db.spec.include_previous_config {
            self.push(Action::CaptureInitParameters);
        }
    }

    fn master(&mut self, cd: &ClusterData, db: &Db) -> PlanEnd {
        if !self.sim.initialized {
            return PlanEnd::Error(PlanError::MasterNotInitialized(db.uid.clone()));
        }
        if db.spec.switchover_stop {
            // Stopped until the sentinel promotes the target or rolls the switchover back.
            if self.sim.running {
                self.push(Action::StopForSwitchover);
            }
            return self.converged(db);
        }
        let mut desired = desired_config(cd, db, &self.sim, None);
        if !self.sim.running {
            if self.sim.holds.crash_loop {
                return PlanEnd::Wait(WaitReason::Held(Hold::CrashLoop));
            }
            // Upstream's waitSyncStandbysSynced: after a restart of a sync-replication master
            // its standbys may lag; clients stay out until they are in sync again.
            desired.hba.internal_only = db.spec.synchronous_replication;
            if self.sim.applied.as_ref() != Some(&desired) {
                self.push(Action::WriteConfig(desired.clone()));
            }
            self.push(Action::Start);
        }
        let followers = followers_of(db);
        if self.sim.role == LocalRole::Standby {
            // Promote before anything else: failover time is what this path is judged on.
            self.push(Action::PrepareSlots {
                followers: followers.clone(),
            });
            self.push(Action::Promote);
        }
        if self.sim.applied.as_ref() != Some(&desired) {
            let new_standbys = self.sim.applied.as_ref().is_none_or(|a| {
                a.synchronous_standbys != desired.synchronous_standbys
                    || a.external_synchronous_standbys != desired.external_synchronous_standbys
            });
            let standbys = desired.synchronous_standbys.clone();
            self.push(Action::WriteConfig(desired));
            self.push(Action::Reload);
            if new_standbys && !standbys.is_empty() {
                self.push(Action::ReleaseSyncWaiters { standbys });
            }
        } else {
            self.restart_if_pending(cd);
        }
        self.push(Action::ReconcileSlots {
            followers,
            additional: db.spec.additional_replication_slots.clone(),
        });
        self.converged(db)
    }

    fn standby(&mut self, cd: &ClusterData, db: &Db) -> PlanEnd {
        let recovery = match self.follow_target(cd, db) {
            Ok(r) => r,
            Err(end) => return end,
        };
        // A master shut down cleanly for a switchover follows the new master as it is: the
        // new master received all of its WAL before its promotion, so its timeline forks
        // after this data's end and needs no rewind.
        let rejoins_after_switchover = self.sim.role == LocalRole::Master
            && !self.sim.running
            && self.sim.db_state.switchover_stop_x_log_pos.is_some();
        match self.sim.role {
            LocalRole::None => {
                return PlanEnd::Error(PlanError::StandbyNotInitialized(db.uid.clone()));
            }
            LocalRole::Master if rejoins_after_switchover => {}
            LocalRole::Master => {
                // ⚠ Upstream only logs this and leaves the old master running and writable.
                // We stop it: promise 1 wants it out of the way; the sentinel then assigns a
                // new db (resync) to this keeper.
                self.stop_if_running(StopReason::Demoted);
                return PlanEnd::Error(PlanError::MasterToStandby);
            }
            LocalRole::Standby => {}
        }
        let external = matches!(recovery, Recovery::External { .. });
        let desired = desired_config(cd, db, &self.sim, Some(recovery));
        if rejoins_after_switchover {
            // Writes standby.signal with the settings.
            self.push(Action::WriteConfig(desired.clone()));
            self.sim.role = LocalRole::Standby;
        }
        if !self.sim.running {
            if self.sim.holds.crash_loop {
                return PlanEnd::Wait(WaitReason::Held(Hold::CrashLoop));
            }
            if self.sim.applied.as_ref() != Some(&desired) {
                self.push(Action::WriteConfig(desired));
            }
            self.push(Action::Start);
        } else if let Some(applied) = self.sim.applied.clone()
            && applied.recovery == desired.recovery
        {
            if applied != desired {
                self.push(Action::WriteConfig(desired));
                self.push(Action::Reload);
            } else {
                self.restart_if_pending(cd);
            }
        } else if self.recovery_reloadable(cd, &desired) {
            // ⚠ Deliberate deviation: upstream always restarts a standby whose recovery
            // settings changed (the master moved). From PostgreSQL 13 on a reload is enough:
            // the startup process restarts the walreceiver with the new primary_conninfo and
            // slot, and the standby keeps serving read-only queries throughout a failover
            // instead of dropping its clients and replaying WAL from its last restartpoint.
            self.push(Action::WriteConfig(desired));
            self.push(Action::Reload);
        } else {
            // PostgreSQL < 13 reads primary_conninfo only at start.
            self.push(Action::WriteConfig(desired));
            self.push(Action::Restart);
        }
        if external {
            // A standby cluster's head keeps its own standbys' slots (they stream from it) and
            // the additional ones; internal standbys leave slots alone (upstream), a promotion
            // reconciles them.
            self.push(Action::ReconcileSlots {
                followers: followers_of(db),
                additional: db.spec.additional_replication_slots.clone(),
            });
        }
        self.converged(db)
    }

    /// Whether the running standby can take `desired`'s recovery settings with a reload. All
    /// the recovery settings we write (primary_conninfo, primary_slot_name and, following an
    /// external db, recovery_min_apply_delay) are reloadable from PostgreSQL 13 on, so a
    /// switch between internal and external follow reloads as well. (Archive recovery
    /// settings are not written; restore_command would need PostgreSQL 14 to reload.)
    /// A restart stays the way when the version is older or unknown, when the instance does
    /// not run under recovery settings this process wrote (the previous write failed half
    /// way, or it was written for a promotion that did not happen: nothing tells what it
    /// follows), and when a restart is due anyway (`pending_restart` with automaticPgRestart):
    /// one restart then does both.
    fn recovery_reloadable(&self, cd: &ClusterData, desired: &DesiredConfig) -> bool {
        let version_ok = self
            .sim
            .pg_major
            .is_some_and(|m| m >= RELOADABLE_RECOVERY_SINCE);
        let following = self
            .sim
            .applied
            .as_ref()
            .is_some_and(|a| a.recovery.is_some());
        let restart_due = self.sim.pending_restart && cd.cluster.spec.automatic_pg_restart();
        version_ok && following && desired.recovery.is_some() && !restart_due
    }

    fn restart_if_pending(&mut self, cd: &ClusterData) {
        // Without automaticPgRestart the operator restarts the keeper when convenient.
        if self.sim.running && self.sim.pending_restart && cd.cluster.spec.automatic_pg_restart() {
            self.push(Action::Restart);
        }
    }

    fn follow_target(&self, cd: &ClusterData, db: &Db) -> Result<Recovery, PlanEnd> {
        let Some(fc) = &db.spec.follow_config else {
            return Err(PlanEnd::Error(PlanError::NoFollowConfig(db.uid.clone())));
        };
        match fc.follow_type {
            FollowType::Internal => {
                let Some(followed) = cd.dbs.get(&fc.db_uid) else {
                    return Err(PlanEnd::Error(PlanError::FollowedDbMissing {
                        db: db.uid.clone(),
                        followed: fc.db_uid.clone(),
                    }));
                };
                if followed.status.listen_address.is_empty() || followed.status.port.is_empty() {
                    return Err(PlanEnd::Wait(WaitReason::FollowedDbAddressUnknown(
                        followed.uid.clone(),
                    )));
                }
                Ok(Recovery::Follow {
                    db_uid: followed.uid.clone(),
                    host: followed.status.listen_address.clone(),
                    port: followed.status.port.clone(),
                    slot: stolon_name(&db.uid),
                })
            }
            FollowType::External => {
                let standby = fc
                    .standby_settings
                    .clone()
                    .filter(|s| !s.primary_conninfo.is_empty());
                let archive = fc
                    .archive_recovery_settings
                    .clone()
                    .filter(|a| !a.restore_command.is_empty());
                if standby.is_none() && archive.is_none() {
                    return Err(PlanEnd::Error(PlanError::NoStandbySettings(db.uid.clone())));
                }
                Ok(Recovery::External { standby, archive })
            }
        }
    }

    fn converged(&mut self, db: &Db) -> PlanEnd {
        if self.sim.db_state.generation != db.generation || self.sim.db_state.initializing {
            self.push(Action::MarkDbState {
                initializing: false,
                generation: Some(db.generation),
            });
        }
        PlanEnd::Converged {
            db_uid: db.uid.clone(),
            generation: db.generation,
        }
    }
}

/// The dbs streaming from `db` (its slots are named after them), sorted, without itself.
fn followers_of(db: &Db) -> Vec<DbUid> {
    let mut followers: Vec<DbUid> = db
        .spec
        .followers
        .iter()
        .filter(|f| **f != db.uid)
        .cloned()
        .collect();
    followers.sort();
    followers.dedup();
    followers
}

/// The config `db` wants on this keeper, given the simulated local state.
fn desired_config(
    cd: &ClusterData,
    db: &Db,
    sim: &LocalState,
    recovery: Option<Recovery>,
) -> DesiredConfig {
    let mut parameters = BTreeMap::new();
    if db.spec.include_previous_config {
        parameters.extend(sim.db_state.init_pg_parameters.clone());
    }
    parameters.extend(db.spec.pg_parameters.clone());
    // Bounds the WAL a dead standby's slot holds on the master (and on a standby, for when
    // it is promoted). Read from the cluster spec: the db spec has no such field upstream.
    parameters.insert(
        crate::cluster::MAX_SLOT_WAL_KEEP_SIZE.to_string(),
        cd.cluster.spec.max_slot_wal_keep_size(),
    );

    let (synchronous_standbys, external_synchronous_standbys) = if db.spec.synchronous_replication {
        let mut s = db.spec.synchronous_standbys.clone();
        s.sort();
        let mut e = db.spec.external_synchronous_standbys.clone();
        e.sort();
        (s, e)
    } else {
        (Vec::new(), Vec::new())
    };

    let access_mode = cd.cluster.spec.default_su_repl_access_mode();
    // Strict mode opens su/replication only on the db others replicate from, and only to them.
    let master_type = db.spec.role == DbRole::Master
        || db
            .spec
            .follow_config
            .as_ref()
            .is_some_and(|f| f.follow_type == FollowType::External);
    let mut other_db_addresses: Vec<String> =
        if access_mode == SuReplAccessMode::Strict && master_type {
            cd.dbs
                .values()
                .filter(|d| d.uid != db.uid && !d.status.listen_address.is_empty())
                .map(|d| d.status.listen_address.clone())
                .collect()
        } else {
            Vec::new()
        };
    other_db_addresses.sort();
    other_db_addresses.dedup();

    // Keep the clients out while the synchronous standbys the spec names are not in sync yet:
    // a restarted master would otherwise acknowledge commits no standby has.
    let waiting_for_sync = db.spec.role == DbRole::Master
        && db.spec.synchronous_replication
        && sim.running
        && sim.applied.as_ref().is_some_and(|a| a.hba.internal_only)
        && !sim.in_sync_standbys.as_ref().is_some_and(|in_sync| {
            let mut a = in_sync.clone();
            a.sort();
            a == synchronous_standbys
        });

    DesiredConfig {
        parameters,
        max_standbys: db.spec.max_standbys,
        additional_wal_senders: db.spec.additional_wal_senders,
        use_pg_rewind: db.spec.use_pg_rewind,
        synchronous_standbys,
        external_synchronous_standbys,
        hba: HbaConfig {
            access_mode,
            master_type,
            other_db_addresses,
            user_rules: db.spec.pg_hba.clone(),
            internal_only: waiting_for_sync,
        },
        recovery,
    }
}
