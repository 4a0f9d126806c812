//! Db classification and the choice of a new master (upstream's db classification and
//! `findBestNewMasters`). Pure functions over the clusterdata as updated by this check.

use super::health::{Convergence, convergence};
use super::memory::Memory;
use crate::cluster::{
    ClusterData, ClusterRole, ClusterSpec, Db, DbInitMode, DbRole, FollowType, INITIAL_GENERATION,
    KeeperUid, Time, find_timeline,
};
use std::cmp::Reverse;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DbType {
    /// Role master, or the head of a standby cluster (follows an external primary).
    Master,
    /// Follows a db of this cluster.
    Standby,
    /// Role undefined: a failed master's db kept at failover, its PostgreSQL stopped, in case
    /// it must be master again (src/sentinel/normal.rs). Neither served nor followed.
    Deposed,
}

pub(crate) fn db_type(db: &Db) -> DbType {
    match db.spec.role {
        DbRole::Master => DbType::Master,
        DbRole::Standby
            if db
                .spec
                .follow_config
                .as_ref()
                .is_some_and(|f| f.follow_type == FollowType::External) =>
        {
            DbType::Master
        }
        DbRole::Undefined => DbType::Deposed,
        DbRole::Standby => DbType::Standby,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validity {
    Valid,
    Invalid,
    /// Never reported a generation: nothing known about its data yet.
    Unknown,
}

pub(crate) fn validity(cd: &ClusterData, db: &Db) -> Validity {
    if db.status.current_generation.is_zero() {
        return Validity::Unknown;
    }
    let Some(master) = cd.master_db() else {
        return Validity::Unknown;
    };
    if !db.status.system_id.is_empty() && db.status.system_id != master.status.system_id {
        return Validity::Invalid;
    }
    if is_different_timeline_branch(master, db) {
        return Validity::Invalid;
    }
    Validity::Valid
}

/// Whether `db` diverged from `followed` (upstream's isDifferentTimelineBranch).
pub(crate) fn is_different_timeline_branch(followed: &Db, db: &Db) -> bool {
    let (ftl, tl) = (followed.status.timeline_id, db.status.timeline_id);
    if ftl < tl {
        return true;
    }
    if ftl == tl {
        if tl <= 1 {
            return false;
        }
        let f = find_timeline(&followed.status.timelines_history, tl - 1);
        let o = find_timeline(&db.status.timelines_history, tl - 1);
        return match (f, o) {
            (Some(f), Some(o)) => f.switch_point != o.switch_point,
            _ => false,
        };
    }
    find_timeline(&followed.status.timelines_history, tl)
        .is_some_and(|f| f.switch_point < db.status.x_log_pos)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DbState {
    Good,
    Converging,
    Failed,
}

pub(crate) fn db_state(cd: &ClusterData, db: &Db, memory: &Memory, now: Time) -> DbState {
    let keeper_healthy = cd
        .keepers
        .get(&db.spec.keeper_uid)
        .is_some_and(|k| k.status.healthy);
    if !keeper_healthy {
        return DbState::Failed;
    }
    let spec = &cd.cluster.spec;
    let timeout = if db.generation == INITIAL_GENERATION && db.spec.init_mode == DbInitMode::Resync
    {
        spec.sync_timeout()
    } else {
        spec.convergence_timeout()
    };
    match convergence(db, timeout, memory, now) {
        Convergence::Failed => DbState::Failed,
        Convergence::Converging => DbState::Converging,
        Convergence::Converged if db.status.healthy => DbState::Good,
        Convergence::Converged => DbState::Failed,
    }
}

/// Synchronous replication applies only to a primary cluster: the head of a standby cluster
/// cascades from an external primary that we do not control.
pub(crate) fn sync_repl(spec: &ClusterSpec) -> bool {
    spec.synchronous_replication() && spec.role() == ClusterRole::Master
}

/// Valid dbs of a type, grouped by state, in uid order.
pub(crate) fn valid_by_state<'a>(
    cd: &'a ClusterData,
    kind: DbType,
    memory: &Memory,
    now: Time,
) -> Vec<(&'a Db, DbState)> {
    cd.dbs
        .values()
        .filter(|db| db_type(db) == kind && validity(cd, db) == Validity::Valid)
        .map(|db| (db, db_state(cd, db, memory, now)))
        .collect()
}

fn lag_ok(cd: &ClusterData, master: &Db, db: &Db) -> bool {
    if sync_repl(&cd.cluster.spec) {
        // With sync repl the last reported xLogPos is not trusted to exclude a sync standby:
        // being in the synchronous set is what matters.
        return true;
    }
    master.status.x_log_pos.saturating_sub(db.status.x_log_pos)
        <= u64::from(cd.cluster.spec.max_standby_lag())
}

/// Orders candidates by xLogPos, HIGHEST first (ties by uid, for determinism).
/// ⚠ Upstream sorts ascending and takes the first, i.e. elects the most lagging eligible
/// standby although its docs promise the "nearest" one; we elect the most advanced one, which
/// loses the least data and needs the least catch-up.
fn by_x_log_pos_desc(dbs: &mut [&Db]) {
    dbs.sort_by_key(|db| (Reverse(db.status.x_log_pos), db.uid.clone()));
}

/// Good, valid standbys on the master's timeline and (async only) within maxStandbyLag.
pub(crate) fn best_standbys<'a>(
    cd: &'a ClusterData,
    master: &Db,
    memory: &Memory,
    now: Time,
) -> Vec<&'a Db> {
    let mut out: Vec<&Db> = valid_by_state(cd, DbType::Standby, memory, now)
        .into_iter()
        .filter(|(db, state)| {
            *state == DbState::Good
                && db.status.timeline_id == master.status.timeline_id
                && lag_ok(cd, master, db)
        })
        .map(|(db, _)| db)
        .collect();
    by_x_log_pos_desc(&mut out);
    out
}

/// The keeper's `--priority` (1 for a keeper not in the clusterdata: never the case for a db's).
pub(crate) fn keeper_priority(cd: &ClusterData, db: &Db) -> i64 {
    cd.keepers
        .get(&db.spec.keeper_uid)
        .map_or(1, |k| k.status.priority())
}

/// Orders candidates by keeper priority, then xLogPos, both HIGHEST first (ties by uid).
/// Priority only picks among standbys already eligible (within maxStandbyLag, or in sync),
/// so preferring one costs no acknowledged write.
fn by_priority_then_x_log_pos(cd: &ClusterData, dbs: &mut [&Db]) {
    dbs.sort_by_key(|db| {
        (
            Reverse(keeper_priority(cd, db)),
            Reverse(db.status.x_log_pos),
            db.uid.clone(),
        )
    });
}

/// Candidates to replace `master`, best first: good standbys whose keeper may be master (and
/// has a priority above 0) and which a fresh info reported healthy since the memory was reset,
/// plus other good master-type dbs.
pub(crate) fn best_new_masters<'a>(
    cd: &'a ClusterData,
    master: &Db,
    memory: &Memory,
    now: Time,
) -> Vec<&'a Db> {
    let can_be_master = |db: &Db| {
        cd.keepers
            .get(&db.spec.keeper_uid)
            .is_some_and(|k| k.status.can_be_master != Some(false) && k.status.priority() > 0)
    };
    // Stricter than upstream: after a leader change the stored status may be stale (a standby
    // dead before we became leader still says healthy); only a db whose keeper told *us* it is
    // healthy, with no error since, may be promoted.
    let reported_healthy = |db: &Db| {
        memory
            .dbs
            .get(&db.uid)
            .is_some_and(|m| m.error_since.is_none() && m.reported_healthy_at.is_some())
    };
    let mut out: Vec<&Db> = best_standbys(cd, master, memory, now)
        .into_iter()
        .filter(|db| can_be_master(db) && reported_healthy(db))
        .collect();
    for (db, state) in valid_by_state(cd, DbType::Master, memory, now) {
        if db.uid != master.uid
            && state == DbState::Good
            && db.status.timeline_id == master.status.timeline_id
            && lag_ok(cd, master, db)
            && can_be_master(db)
            && reported_healthy(db)
        {
            out.push(db);
        }
    }
    by_priority_then_x_log_pos(cd, &mut out);
    out
}

/// Keepers that are healthy and hold no db, in uid order.
pub(crate) fn free_keepers(cd: &ClusterData) -> Vec<KeeperUid> {
    cd.keepers
        .values()
        .filter(|k| k.status.healthy && cd.db_of_keeper(&k.uid).is_none())
        .map(|k| k.uid.clone())
        .collect()
}

/// WAL segment name without timeline, for 16 MiB segments (upstream's assumption, #771): keepers
/// report their oldest WAL file under its 16 MiB name whatever their segment size
/// (src/postgres/files.rs).
fn wal_name_no_timeline(x_log_pos: u64) -> String {
    const WAL_SEG_SIZE: u32 = 16 * 1024 * 1024;
    let id = (x_log_pos >> 32) as u32;
    let seg = (x_log_pos as u32) / WAL_SEG_SIZE;
    format!("{id:08X}{seg:08X}")
}

/// False when a standby stopped progressing and the master no longer has the WAL it needs
/// (upstream's dbCanSync): only a fresh resync can bring it back.
pub(crate) fn db_can_sync(cd: &ClusterData, db: &Db, memory: &Memory) -> bool {
    const NOT_INCREASING_TIMES: u32 = crate::cluster::DB_NOT_INCREASING_XLOGPOS_TIMES;
    let Some(master) = cd.master_db() else {
        return true;
    };
    let older = &master.status.older_wal_file;
    if older.is_empty()
        || db.uid == master.uid
        || db_type(db) != DbType::Standby
        || db.generation == INITIAL_GENERATION
        || !db.status.healthy
        || db.status.x_log_pos == master.status.x_log_pos
    {
        return true;
    }
    let stuck = memory
        .dbs
        .get(&db.uid)
        .is_some_and(|m| m.x_log_pos_unchanged > NOT_INCREASING_TIMES);
    if !stuck {
        return true;
    }
    let valid_name = older.len() == 24 && older.chars().all(|c| c.is_ascii_hexdigit());
    if !valid_name {
        return true;
    }
    wal_name_no_timeline(db.status.x_log_pos).as_str() >= &older[8..24]
}
