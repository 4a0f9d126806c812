//! Phase initializing: choose the keeper that creates (`new`), adopts
//! (`existing`) or restores (`pitr`) the first master, wait for it, then switch to normal.

use super::events::Event;
use super::health::{Convergence, convergence};
use super::memory::Memory;
use crate::cluster::{
    ClusterData, ClusterInitMode, ClusterPhase, ClusterRole, Db, DbInitMode, DbRole, DbSpec, DbUid,
    FollowConfig, FollowType, INITIAL_GENERATION, KeeperUid, Time,
};

pub(crate) fn update_initializing(
    cd: &mut ClusterData,
    memory: &Memory,
    now: Time,
    new_uid: &mut dyn FnMut() -> String,
    events: &mut Vec<Event>,
) {
    let spec = cd.cluster.spec.clone();
    // Validation guarantees an init mode; a stored spec without one never reaches here.
    let Some(mode) = spec.init_mode else {
        events.push(Event::Inconsistent {
            reason: "cluster spec has no initMode".into(),
        });
        return;
    };
    let Some(master_uid) = cd.cluster.status.master.clone() else {
        let db_uid = DbUid::from(new_uid());
        let keeper = match mode {
            ClusterInitMode::Existing => {
                let wanted = spec
                    .existing_config
                    .as_ref()
                    .map(|c| c.keeper_uid.clone())
                    .unwrap_or_default();
                if !cd.keepers.contains_key(&wanted) {
                    events.push(Event::InitKeeperMissing { keeper: wanted });
                    return;
                }
                wanted
            }
            ClusterInitMode::New | ClusterInitMode::Pitr => match initial_keeper(cd, &db_uid) {
                Some(k) => k,
                None => {
                    events.push(Event::InitNoKeepers);
                    return;
                }
            },
        };
        let db = initial_db(cd, mode, &keeper, db_uid);
        events.push(Event::InitMasterChosen {
            db: db.uid.clone(),
            keeper: keeper.clone(),
        });
        cd.cluster.status.master = Some(db.uid.clone());
        cd.dbs.insert(db.uid.clone(), db);
        return;
    };
    let Some(db) = cd.dbs.get(&master_uid) else {
        events.push(Event::Inconsistent {
            reason: format!("cluster.status.master {master_uid:?} names no db"),
        });
        return;
    };
    let timeout = match mode {
        ClusterInitMode::New => spec.init_timeout(),
        ClusterInitMode::Existing => spec.convergence_timeout(),
        // ⚠ Upstream waits for a restore forever; a failed one (its keeper logs why) is
        // given up after initTimeout and tried again, on a keeper chosen afresh.
        ClusterInitMode::Pitr => spec.init_timeout(),
    };
    match convergence(db, timeout, memory, now) {
        Convergence::Converged if db.status.healthy => {
            let keeper = db.spec.keeper_uid.clone();
            let params = db.status.pg_parameters.clone();
            if let Some(db) = cd.dbs.get_mut(&master_uid) {
                db.spec.init_mode = DbInitMode::None;
                db.spec.include_previous_config = false;
            }
            if spec.merge_pg_parameters() {
                cd.cluster.spec.pg_parameters = Some(params);
            }
            cd.cluster.status.phase = ClusterPhase::Normal;
            events.push(Event::ClusterInitialized {
                db: master_uid,
                keeper,
            });
        }
        // Upstream never gives up on `existing`: there is no other keeper to try.
        Convergence::Failed if mode != ClusterInitMode::Existing => {
            events.push(Event::InitFailed {
                db: master_uid,
                keeper: db.spec.keeper_uid.clone(),
            });
            cd.dbs.clear();
            cd.cluster.status.master = None;
        }
        _ => {}
    }
}

/// A pseudo-random healthy keeper of the highest `--priority`, as upstream (so a retry after a
/// failed init may land on another one). ⚠ Upstream also picks keepers started with
/// --can-be-master=false; we skip them, and those of priority 0: neither is ever elected
/// automatically.
///
/// The randomness comes from the (random in production) uid of the db to create, so that
/// `decide` stays a function of its inputs.
fn initial_keeper(cd: &ClusterData, db_uid: &DbUid) -> Option<KeeperUid> {
    let eligible: Vec<&crate::cluster::Keeper> = cd
        .keepers
        .values()
        .filter(|k| {
            k.status.healthy && k.status.can_be_master != Some(false) && k.status.priority() > 0
        })
        .collect();
    let top = eligible.iter().map(|k| k.status.priority()).max();
    let candidates: Vec<&KeeperUid> = eligible
        .iter()
        .filter(|k| Some(k.status.priority()) == top)
        .map(|k| &k.uid)
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let h = db_uid
        .as_str()
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let i = usize::try_from(h % candidates.len() as u64).unwrap_or(0);
    Some(candidates[i].clone())
}

fn initial_db(cd: &ClusterData, mode: ClusterInitMode, keeper: &KeeperUid, uid: DbUid) -> Db {
    let spec = &cd.cluster.spec;
    let mut db_spec = DbSpec {
        keeper_uid: keeper.clone(),
        role: DbRole::Master,
        followers: Vec::new(),
        include_previous_config: spec.merge_pg_parameters(),
        ..Default::default()
    };
    match mode {
        ClusterInitMode::New => {
            db_spec.init_mode = DbInitMode::New;
            db_spec.new_config = spec.new_config.clone();
        }
        ClusterInitMode::Existing => db_spec.init_mode = DbInitMode::Existing,
        ClusterInitMode::Pitr => {
            db_spec.init_mode = DbInitMode::Pitr;
            db_spec.pitr_config = spec.pitr_config.clone();
            if spec.role() == ClusterRole::Standby {
                db_spec.role = DbRole::Standby;
                db_spec.follow_config = Some(external_follow_config(cd));
            }
        }
    }
    Db {
        uid,
        generation: INITIAL_GENERATION,
        change_time: crate::cluster::zero_time(),
        spec: db_spec,
        status: Default::default(),
    }
}

/// How the head of a standby cluster follows the external primary.
pub(crate) fn external_follow_config(cd: &ClusterData) -> FollowConfig {
    let sc = cd.cluster.spec.standby_config.clone().unwrap_or_default();
    FollowConfig {
        follow_type: FollowType::External,
        db_uid: DbUid::default(),
        standby_settings: sc.standby_settings,
        archive_recovery_settings: sc.archive_recovery_settings,
    }
}
