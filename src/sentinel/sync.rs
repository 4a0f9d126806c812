//! Synchronous standby management on a healthy, converged master (upstream's "sync
//! standbys" step). The invariant it protects: every db listed in the master's
//! `status.synchronousStandbys` was really in sync, so a failover to one of them loses no
//! acknowledged write. The spec set changes only when the status caught up with it, and a new
//! set is first merged with the old one, so at every moment at least one known-in-sync standby
//! stays in the list.

use super::events::Event;
use crate::cluster::{ClusterData, ClusterSpec, DbUid};
use std::collections::BTreeSet;

/// Upstream's name for the placeholder that makes the master block commits when fewer than
/// minSynchronousStandbys real standbys exist.
pub const FAKE_STANDBY_NAME: &str = "stolonfakestandby";

fn common(a: &[DbUid], b: &[DbUid]) -> Vec<DbUid> {
    a.iter().filter(|x| b.contains(x)).cloned().collect()
}

fn same_set(a: &[DbUid], b: &[DbUid]) -> bool {
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

fn sorted(mut v: Vec<DbUid>) -> Vec<DbUid> {
    v.sort();
    v.dedup();
    v
}

/// `good` are the uids of good standbys; `best` the best standbys in election order;
/// `reported` the standbys the master's keeper last reported in sync.
pub(crate) fn update_sync_standbys(
    cd: &mut ClusterData,
    spec: &ClusterSpec,
    good: &BTreeSet<DbUid>,
    best: &[DbUid],
    reported: &[DbUid],
    events: &mut Vec<Event>,
) {
    let Some(master_uid) = cd.cluster.status.master.clone() else {
        return;
    };
    let Some(master) = cd.dbs.get(&master_uid) else {
        return;
    };
    let keeper_version = cd
        .keepers
        .get(&master.spec.keeper_uid)
        .map(|k| k.status.postgres_binary_version);
    let existing: BTreeSet<DbUid> = cd.dbs.keys().cloned().collect();
    let x_log_pos = |uid: &DbUid| cd.dbs.get(uid).map_or(0, |d| d.status.x_log_pos);
    let can_be_sync = |uid: &DbUid| {
        cd.dbs
            .get(uid)
            .and_then(|d| cd.keepers.get(&d.spec.keeper_uid))
            .is_none_or(|k| k.status.can_be_synchronous_replica != Some(false))
    };

    let mut min = usize::from(spec.min_synchronous_standbys());
    let mut max = usize::from(spec.max_synchronous_standbys());
    let mut merge = true;
    // PostgreSQL ≤ 9.5 has a single sync standby: with several listed we could not know which
    // one is really in sync.
    if let Some(v) = keeper_version
        && v.maj == 9
        && v.min <= 5
    {
        min = 1;
        max = 1;
        merge = false;
    }

    let mut status = master.status.synchronous_standbys.clone();
    let mut wanted = master.spec.synchronous_standbys.clone();
    let prev_wanted = wanted.clone();

    if !same_set(&status, &wanted) {
        status = common(&status, &wanted);
        for uid in common(reported, &wanted) {
            if !status.contains(&uid) {
                status.push(uid);
            }
        }
        // A wanted standby that will never catch up (removed or failed): fall back to the
        // ones known in sync, so another can be chosen.
        let stuck = wanted
            .iter()
            .filter(|uid| !status.contains(uid))
            .any(|uid| !existing.contains(uid) || !good.contains(uid));
        if stuck {
            wanted = sorted(status.clone());
        }
    }

    let mut external = master.spec.external_synchronous_standbys.clone();
    if same_set(&status, &wanted) {
        let prev: BTreeSet<DbUid> = wanted.iter().cloned().collect();
        let mut set: BTreeSet<DbUid> = prev
            .iter()
            .filter(|uid| existing.contains(*uid) && good.contains(*uid))
            .cloned()
            .collect();
        if set.len() > max {
            // Drop the most lagging first.
            let mut by_pos: Vec<DbUid> = set.iter().cloned().collect();
            by_pos.sort_by_key(|uid| (x_log_pos(uid), uid.clone()));
            for uid in by_pos.into_iter().take(set.len() - max) {
                set.remove(&uid);
            }
        }
        for uid in best {
            if set.len() >= max {
                break;
            }
            if !set.contains(uid) && can_be_sync(uid) {
                set.insert(uid.clone());
            }
        }
        // Below the minimum: keep previous sync standbys even if failed, they may come back
        // and are the only ones we may fail over to.
        for uid in &prev {
            if set.len() >= min {
                break;
            }
            if existing.contains(uid) {
                set.insert(uid.clone());
            }
        }
        if merge && !set.is_subset(&prev) {
            set.extend(prev.iter().filter(|uid| existing.contains(*uid)).cloned());
        }
        external = if set.len() < min {
            vec![FAKE_STANDBY_NAME.to_string()]
        } else {
            Vec::new()
        };
        wanted = set.into_iter().collect();
        status = sorted(common(&status, &wanted));
    }

    let master = match cd.dbs.get_mut(&master_uid) {
        Some(m) => m,
        None => return,
    };
    if wanted != prev_wanted {
        events.push(Event::SyncStandbysChanged {
            db: master_uid.clone(),
            from: prev_wanted,
            to: wanted.clone(),
        });
    }
    if !external.is_empty() && master.spec.external_synchronous_standbys.is_empty() {
        events.push(Event::FakeSyncStandby {
            db: master_uid.clone(),
        });
    }
    master.spec.synchronous_replication = true;
    master.spec.synchronous_standbys = wanted;
    master.spec.external_synchronous_standbys = external;
    master.status.synchronous_standbys = status;
}

pub(crate) fn disable_sync(cd: &mut ClusterData) {
    let Some(master_uid) = cd.cluster.status.master.clone() else {
        return;
    };
    if let Some(master) = cd.dbs.get_mut(&master_uid) {
        master.spec.synchronous_replication = false;
        master.spec.synchronous_standbys.clear();
        master.spec.external_synchronous_standbys.clear();
        master.status.synchronous_standbys.clear();
    }
}

/// The sync list of a newly elected master: the old master's, minus the new master itself.
/// Upstream puts the old master db in its place; we remove the failed master's db at failover
/// (see normal.rs), and a placeholder for a removed db would only block commits until the next
/// check drops it. With nothing left and minSynchronousStandbys > 0 the fake standby makes the
/// new master block commits until a real standby is in sync: no write is acknowledged by a
/// single node when the operator asked for synchronous replication.
/// The synchronous settings of a db just made master (failover or switchover): with synchronous
/// replication it inherits `inherited` ([`inherit_sync_standbys`]), without it has none.
pub(crate) fn set_new_master_sync(
    cd: &mut ClusterData,
    spec: &ClusterSpec,
    inherited: &[DbUid],
    new_master: &DbUid,
) {
    if super::elect::sync_repl(spec) {
        inherit_sync_standbys(cd, spec, inherited, new_master);
    } else if let Some(db) = cd.dbs.get_mut(new_master) {
        db.spec.synchronous_replication = false;
        db.spec.synchronous_standbys.clear();
        db.spec.external_synchronous_standbys.clear();
    }
}

pub(crate) fn inherit_sync_standbys(
    cd: &mut ClusterData,
    spec: &ClusterSpec,
    old_master_list: &[DbUid],
    new_master: &DbUid,
) {
    let list: Vec<DbUid> = sorted(
        old_master_list
            .iter()
            .filter(|uid| *uid != new_master)
            .cloned()
            .collect(),
    );
    let Some(db) = cd.dbs.get_mut(new_master) else {
        return;
    };
    db.spec.synchronous_replication = true;
    db.spec.external_synchronous_standbys =
        if list.is_empty() && spec.min_synchronous_standbys() > 0 {
            vec![FAKE_STANDBY_NAME.to_string()]
        } else {
            Vec::new()
        };
    db.spec.synchronous_standbys = list;
    // The new master's own in-sync knowledge starts empty: nothing was in sync with it yet.
    db.status.synchronous_standbys.clear();
}
