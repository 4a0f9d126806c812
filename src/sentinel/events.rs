//! What a check decided, as typed events: the loop logs them with keeper/db fields, tests assert
//! on them. Events are emitted on transitions, not on every check, so logs stay readable.

use crate::cluster::{DbUid, Generation, KeeperUid, SwitchoverStage};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterFailure {
    Unhealthy,
    ConvergenceFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    /// A master-type db other than the elected master.
    OldMaster,
    /// Another system id or a diverged timeline: it can never follow the master.
    Invalid,
    /// It stopped progressing and the master no longer has the WAL it needs.
    CannotSync,
    /// Enough good standbys exist; this one is failed or converging.
    NotGood,
    /// More good standbys than maxStandbysPerSender.
    Excess,
    /// The db of a failed master, deposed at failover (its keeper keeps postgres stopped),
    /// once the new master is ready, or when another master is deposed after it: it rejoins
    /// later with a new db.
    FailedMaster,
    /// A standby whose keeper has been unhealthy for deadKeeperRemovalInterval: the master
    /// then drops its replication slot, which would otherwise keep WAL for it forever.
    DeadKeeper,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// First check after a memory reset: infos recorded, failures judged only after failInterval.
    ObservationStarted,
    /// First check after this sentinel could not read the store for failInterval or more:
    /// every process stored healthy gets `grace_ms` to publish again before it is judged.
    ObservationResumed {
        blind_ms: i64,
        grace_ms: i64,
    },
    KeeperAdded {
        keeper: KeeperUid,
    },
    KeeperUnhealthy {
        keeper: KeeperUid,
        /// Milliseconds since its info last changed.
        silent_ms: i64,
    },
    KeeperHealthy {
        keeper: KeeperUid,
    },
    KeeperForceFailed {
        keeper: KeeperUid,
    },
    KeeperInfoWrongCluster {
        keeper: KeeperUid,
        cluster_uid: String,
    },
    /// A keeper without db, not seen healthy for deadKeeperRemovalInterval.
    DeadKeeperRemoved {
        keeper: KeeperUid,
    },
    DbUnhealthy {
        db: DbUid,
        keeper: KeeperUid,
    },
    DbHealthy {
        db: DbUid,
        keeper: KeeperUid,
    },
    InitNoKeepers,
    InitKeeperMissing {
        keeper: KeeperUid,
    },
    InitMasterChosen {
        db: DbUid,
        keeper: KeeperUid,
    },
    InitFailed {
        db: DbUid,
        keeper: KeeperUid,
    },
    ClusterInitialized {
        db: DbUid,
        keeper: KeeperUid,
    },
    MasterFailed {
        db: DbUid,
        keeper: KeeperUid,
        why: MasterFailure,
    },
    MasterElected {
        old: DbUid,
        new: DbUid,
        keeper: KeeperUid,
        x_log_pos: u64,
    },
    /// The failed master's db is kept with role undefined: its keeper stops PostgreSQL, and
    /// it is removed once the new master is ready (src/sentinel/normal.rs).
    MasterDeposed {
        db: DbUid,
        keeper: KeeperUid,
    },
    /// The master elected in place of `db` died before it served, and no standby may replace
    /// it: `db`, the deposed master that is back, is master again.
    DeposedMasterReelected {
        db: DbUid,
        keeper: KeeperUid,
        instead_of: DbUid,
    },
    NoEligibleMaster {
        db: DbUid,
        reason: String,
    },
    ProxiesNotConverged {
        proxies: Vec<String>,
        generation: Generation,
    },
    MasterPublished {
        db: DbUid,
    },
    EnabledProxiesChanged {
        proxies: Vec<String>,
    },
    DbRemoved {
        db: DbUid,
        keeper: KeeperUid,
        why: RemovalReason,
    },
    StandbyAdded {
        db: DbUid,
        keeper: KeeperUid,
    },
    SyncStandbysChanged {
        db: DbUid,
        from: Vec<DbUid>,
        to: Vec<DbUid>,
    },
    FakeSyncStandby {
        db: DbUid,
    },
    /// The clusterdata contradicts itself; nothing is written until an operator fixes it.
    Inconsistent {
        reason: String,
    },
    /// A planned switchover entered a stage (src/sentinel/switchover.rs).
    Switchover {
        from: DbUid,
        to: DbUid,
        stage: SwitchoverStage,
    },
    SwitchoverRolledBack {
        from: DbUid,
        to: DbUid,
        reason: String,
    },
    /// The master failed while the cluster is paused (`stolonctl pause`): no failover.
    FailoverPaused {
        db: DbUid,
    },
}

impl Event {
    pub fn severity(&self) -> Severity {
        use Event::*;
        match self {
            KeeperInfoWrongCluster { .. } | ProxiesNotConverged { .. } | DbHealthy { .. } => {
                Severity::Debug
            }
            KeeperUnhealthy { .. }
            | DbUnhealthy { .. }
            | MasterFailed { .. }
            | InitFailed { .. }
            | InitKeeperMissing { .. }
            | InitNoKeepers
            | DeposedMasterReelected { .. }
            | SwitchoverRolledBack { .. }
            | FailoverPaused { .. }
            | FakeSyncStandby { .. } => Severity::Warn,
            NoEligibleMaster { .. } | Inconsistent { .. } => Severity::Error,
            _ => Severity::Info,
        }
    }

    /// A condition restated by every check while it lasts (rather than a change): the loop
    /// logs it when it appears, not on every check.
    pub fn is_condition(&self) -> bool {
        use Event::*;
        matches!(
            self,
            InitNoKeepers
                | InitKeeperMissing { .. }
                | MasterFailed { .. }
                | NoEligibleMaster { .. }
                | ProxiesNotConverged { .. }
                | Inconsistent { .. }
                | FailoverPaused { .. }
        )
    }

    pub fn keeper(&self) -> Option<&str> {
        use Event::*;
        match self {
            KeeperAdded { keeper }
            | KeeperUnhealthy { keeper, .. }
            | KeeperHealthy { keeper }
            | KeeperForceFailed { keeper }
            | KeeperInfoWrongCluster { keeper, .. }
            | DeadKeeperRemoved { keeper }
            | DbUnhealthy { keeper, .. }
            | DbHealthy { keeper, .. }
            | InitKeeperMissing { keeper }
            | InitMasterChosen { keeper, .. }
            | InitFailed { keeper, .. }
            | ClusterInitialized { keeper, .. }
            | MasterFailed { keeper, .. }
            | MasterElected { keeper, .. }
            | MasterDeposed { keeper, .. }
            | DeposedMasterReelected { keeper, .. }
            | DbRemoved { keeper, .. }
            | StandbyAdded { keeper, .. } => Some(keeper.as_str()),
            _ => None,
        }
    }

    pub fn db(&self) -> Option<&str> {
        use Event::*;
        match self {
            DbUnhealthy { db, .. }
            | DbHealthy { db, .. }
            | InitMasterChosen { db, .. }
            | InitFailed { db, .. }
            | ClusterInitialized { db, .. }
            | MasterFailed { db, .. }
            | NoEligibleMaster { db, .. }
            | MasterPublished { db }
            | DbRemoved { db, .. }
            | StandbyAdded { db, .. }
            | SyncStandbysChanged { db, .. }
            | FakeSyncStandby { db }
            | FailoverPaused { db } => Some(db.as_str()),
            Switchover { to, .. } | SwitchoverRolledBack { to, .. } => Some(to.as_str()),
            MasterElected { new, .. } => Some(new.as_str()),
            MasterDeposed { db, .. } | DeposedMasterReelected { db, .. } => Some(db.as_str()),
            _ => None,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Event::*;
        match self {
            ObservationStarted => write!(
                f,
                "first check: recording keeper infos, no failure judged before failInterval"
            ),
            ObservationResumed { blind_ms, grace_ms } => write!(
                f,
                "store readable again after {blind_ms} ms: every healthy keeper and proxy has \
                 {grace_ms} ms to publish again before it is judged"
            ),
            KeeperAdded { .. } => write!(f, "new keeper registered"),
            KeeperUnhealthy { silent_ms, .. } => {
                write!(f, "keeper unhealthy: no new info for {silent_ms} ms")
            }
            KeeperHealthy { .. } => write!(f, "keeper healthy"),
            KeeperForceFailed { .. } => write!(f, "keeper force-failed for this check"),
            KeeperInfoWrongCluster { cluster_uid, .. } => {
                write!(f, "ignoring keeper info of another cluster ({cluster_uid})")
            }
            DeadKeeperRemoved { .. } => write!(f, "removing dead keeper without db"),
            DbUnhealthy { .. } => write!(f, "db unhealthy"),
            DbHealthy { .. } => write!(f, "db healthy"),
            InitNoKeepers => write!(
                f,
                "cannot choose initial master: no healthy keeper registered"
            ),
            InitKeeperMissing { keeper } => write!(
                f,
                "existingConfig.keeperUID {keeper:?} is not registered: start that keeper"
            ),
            InitMasterChosen { .. } => write!(f, "initializing cluster on keeper"),
            InitFailed { .. } => write!(
                f,
                "db failed to initialize within the timeout; choosing another keeper"
            ),
            ClusterInitialized { .. } => write!(f, "cluster initialized, phase normal"),
            MasterFailed { why, .. } => write!(f, "master db failed ({why:?})"),
            MasterElected { old, x_log_pos, .. } => write!(
                f,
                "electing new master (old master db {old}, xLogPos {x_log_pos})"
            ),
            NoEligibleMaster { reason, .. } => write!(f, "no eligible master: {reason}"),
            MasterDeposed { .. } => write!(
                f,
                "old master deposed: kept stopped until the new master serves, then resynced"
            ),
            DeposedMasterReelected { instead_of, .. } => write!(
                f,
                "the master elected in its place (db {instead_of}) died before serving and no standby may take over: the deposed master is master again"
            ),
            ProxiesNotConverged {
                proxies,
                generation,
            } => write!(
                f,
                "waiting for proxies {proxies:?} to reach generation {generation}"
            ),
            MasterPublished { .. } => write!(f, "proxies may now route to the master"),
            EnabledProxiesChanged { proxies } => write!(f, "enabled proxies: {proxies:?}"),
            DbRemoved { why, .. } => write!(f, "removing db ({why:?})"),
            StandbyAdded { .. } => write!(f, "assigned a new standby db (resync)"),
            SyncStandbysChanged { from, to, .. } => {
                write!(f, "synchronous standbys {from:?} -> {to:?}")
            }
            FakeSyncStandby { .. } => write!(
                f,
                "not enough synchronous standbys: commits block until one is in sync"
            ),
            Inconsistent { reason } => write!(f, "inconsistent clusterdata: {reason}"),
            Switchover { from, stage, .. } => {
                write!(f, "planned switchover from master db {from}: {stage}")
            }
            SwitchoverRolledBack { from, reason, .. } => write!(
                f,
                "planned switchover rolled back: {reason}; master db {from} serves again"
            ),
            FailoverPaused { .. } => write!(
                f,
                "master db failed but the cluster is paused: no failover until `stolonctl resume`"
            ),
        }
    }
}
