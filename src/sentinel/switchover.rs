//! A planned switchover, stage by stage, from the request `stolonctl switchover` writes (the
//! record: src/cluster/switchover.rs). Unlike a failover it loses nothing even with
//! asynchronous replication: the proxies stop sending clients to the master first, the master
//! stops cleanly (a shutdown checkpoint, every record sent to the standbys), and the target is
//! promoted only once it received WAL past the old master's end. The old master then follows
//! the new one as it is, with no rewind. Before the promotion any failure, and the timeout,
//! roll back to the old master, which starts again.

use super::events::Event;
use super::normal::reconfigure_standbys;
use super::sync;
use crate::cluster::{
    ClusterData, DbRole, DbUid, FollowConfig, ProxyInfo, Switchover, SwitchoverStage, Time,
};
use std::collections::BTreeMap;

/// Advances the switchover in `cd`, if there is one. Returns whether it holds the cluster
/// this check: until the promotion the master is stopped on purpose, so the failure handling
/// and the standby changes of a normal check wait.
pub(crate) fn advance(
    cd: &mut ClusterData,
    proxies: &BTreeMap<String, &ProxyInfo>,
    now: Time,
    events: &mut Vec<Event>,
) -> bool {
    let Some(sw) = cd.cluster.status.switchover.clone() else {
        return false;
    };
    if sw.stage == SwitchoverStage::Promoting {
        let published = cd.proxy.spec.master_db_uid == sw.to_db;
        let superseded = cd.cluster.status.master.as_ref() != Some(&sw.to_db);
        if published || superseded {
            enter(cd, SwitchoverStage::Done, now, events);
        }
        return false;
    }
    if !sw.stage.before_promotion() {
        return false;
    }
    if let Err(reason) = check(cd, &sw, now) {
        roll_back(cd, &sw, now, reason, events);
        return true;
    }
    match sw.stage {
        SwitchoverStage::Requested => {
            // Phase one of the proxy switch, as at a failover: no proxy routes anywhere until
            // every active proxy has closed its sessions to the master.
            if !cd.proxy.spec.master_db_uid.is_empty() {
                cd.proxy.spec.master_db_uid.clear();
                cd.proxy.generation.bump();
            }
            enter(cd, SwitchoverStage::Draining, now, events);
        }
        SwitchoverStage::Draining => {
            let generation = cd.proxy.generation;
            if proxies.values().all(|p| p.generation == generation) {
                if let Some(db) = cd.dbs.get_mut(&sw.from_db) {
                    db.spec.switchover_stop = true;
                }
                enter(cd, SwitchoverStage::Stopping, now, events);
            }
        }
        SwitchoverStage::Stopping => {
            let stopped_at = cd.dbs.get(&sw.from_db).and_then(|db| {
                db.status
                    .stopped_x_log_pos
                    .filter(|_| db.status.current_generation >= db.generation)
            });
            if let Some(at) = stopped_at
                && let Some(s) = cd.cluster.status.switchover.as_mut()
            {
                s.stop_x_log_pos = Some(at);
                enter(cd, SwitchoverStage::CatchingUp, now, events);
            }
        }
        SwitchoverStage::CatchingUp => {
            // Past the start of the shutdown checkpoint: every commit of the old master is
            // before it, and a fast shutdown sends the whole record before the walsender exits.
            let caught_up = match (sw.stop_x_log_pos, cd.dbs.get(&sw.to_db)) {
                (Some(at), Some(target)) => target.status.x_log_pos > at,
                _ => false,
            };
            if caught_up {
                promote(cd, &sw);
                enter(cd, SwitchoverStage::Promoting, now, events);
            }
        }
        SwitchoverStage::Promoting | SwitchoverStage::Done | SwitchoverStage::RolledBack => {}
    }
    true
}

/// Why the switchover cannot go on, if so.
fn check(cd: &ClusterData, sw: &Switchover, now: Time) -> Result<(), String> {
    if cd.cluster.status.master.as_ref() != Some(&sw.from_db) {
        return Err(format!(
            "db {} is no longer the master",
            sw.from_db.as_str()
        ));
    }
    if sw.stage == SwitchoverStage::Requested && cd.cluster.spec.paused() {
        return Err("the cluster is paused".into());
    }
    if now > sw.deadline() {
        return Err(format!(
            "not done within its timeout of {} (stage: {})",
            sw.timeout, sw.stage
        ));
    }
    let Some(target) = cd.dbs.get(&sw.to_db) else {
        return Err(format!("target db {} is gone", sw.to_db.as_str()));
    };
    if !target.is_standby_of(&sw.from_db) {
        return Err(format!(
            "target db {} is not a standby of the master",
            sw.to_db.as_str()
        ));
    }
    let keeper_healthy = cd
        .keepers
        .get(&target.spec.keeper_uid)
        .is_some_and(|k| k.status.healthy);
    if !keeper_healthy || !target.status.healthy {
        return Err(format!(
            "target db {} (keeper {}) is unhealthy",
            sw.to_db.as_str(),
            target.spec.keeper_uid.as_str()
        ));
    }
    if cd.dbs.get(&sw.from_db).is_none_or(|m| {
        cd.keepers
            .get(&m.spec.keeper_uid)
            .is_none_or(|k| !k.status.healthy)
    }) {
        return Err("the master's keeper is unhealthy".into());
    }
    Ok(())
}

fn enter(cd: &mut ClusterData, stage: SwitchoverStage, now: Time, events: &mut Vec<Event>) {
    let Some(sw) = cd.cluster.status.switchover.as_mut() else {
        return;
    };
    sw.stage = stage;
    sw.stage_since = now;
    events.push(Event::Switchover {
        from: sw.from_db.clone(),
        to: sw.to_db.clone(),
        stage,
    });
}

/// Back to the old master: its keeper starts PostgreSQL again (it was stopped cleanly, or
/// not yet), and the proxies are given it again once it serves (src/sentinel/normal.rs).
fn roll_back(
    cd: &mut ClusterData,
    sw: &Switchover,
    now: Time,
    reason: String,
    events: &mut Vec<Event>,
) {
    if let Some(db) = cd.dbs.get_mut(&sw.from_db) {
        db.spec.switchover_stop = false;
    }
    if let Some(s) = cd.cluster.status.switchover.as_mut() {
        s.stage = SwitchoverStage::RolledBack;
        s.stage_since = now;
        s.reason = reason.clone();
    }
    events.push(Event::SwitchoverRolledBack {
        from: sw.from_db.clone(),
        to: sw.to_db.clone(),
        reason,
    });
}

/// The target becomes the master and the old master its standby, in one write. The proxies
/// were drained before the old master stopped; they are given the new master once it is
/// promoted.
fn promote(cd: &mut ClusterData, sw: &Switchover) {
    let spec = cd.cluster.spec.clone();
    let old_sync: Vec<DbUid> = cd
        .dbs
        .get(&sw.from_db)
        .map(|db| db.spec.synchronous_standbys.clone())
        .unwrap_or_default();
    cd.cluster.status.master = Some(sw.to_db.clone());
    if let Some(target) = cd.dbs.get_mut(&sw.to_db) {
        target.spec.role = DbRole::Master;
        target.spec.follow_config = None;
    }
    if let Some(old) = cd.dbs.get_mut(&sw.from_db) {
        old.spec.switchover_stop = false;
        old.spec.role = DbRole::Standby;
        old.spec.follow_config = Some(FollowConfig::internal(&sw.to_db));
    }
    // The old master has every commit the new one has: it is a synchronous standby at once
    // (upstream's choice at a failover too), so commits wait for it rather than for a standby
    // that is not there.
    let mut inherited = old_sync;
    inherited.push(sw.from_db.clone());
    sync::set_new_master_sync(cd, &spec, &inherited, &sw.to_db);
    reconfigure_standbys(cd);
}
