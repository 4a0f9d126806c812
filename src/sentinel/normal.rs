//! Phase normal (upstream's `updateCluster`): failover, the two-phase proxy switch, and
//! shaping the set of standbys around a healthy master.

use super::elect::{
    DbState, DbType, Validity, best_new_masters, best_standbys, db_can_sync, db_type, free_keepers,
    sync_repl, valid_by_state, validity,
};
use super::events::{Event, MasterFailure, RemovalReason};
use super::health::{Convergence, convergence, td};
use super::init::external_follow_config;
use super::memory::Memory;
use super::{switchover, sync};
use crate::cluster::{
    ClusterData, ClusterRole, Db, DbInitMode, DbRole, DbSpec, DbUid, FollowConfig, FollowType,
    INITIAL_GENERATION, KeeperUid, ProxyInfo, Time, zero_time,
};
use std::collections::{BTreeMap, BTreeSet};

/// `cd` is the clusterdata after this check's health update; returns false (and writes
/// nothing) when it contradicts itself.
pub(crate) fn update_normal(
    cd: &mut ClusterData,
    proxies: &BTreeMap<String, &ProxyInfo>,
    memory: &Memory,
    now: Time,
    new_uid: &mut dyn FnMut() -> String,
    events: &mut Vec<Event>,
) -> bool {
    let paused = cd.cluster.spec.paused();
    if !paused {
        remove_dead_keepers(cd, now, events);
    }

    let Some(cur) = cd.master_db().cloned() else {
        events.push(Event::Inconsistent {
            reason: match &cd.cluster.status.master {
                Some(uid) => format!("cluster.status.master {uid:?} names no db"),
                None => "cluster is in phase normal but has no master".into(),
            },
        });
        return false;
    };
    let cur_uid = cur.uid.clone();

    if switchover::advance(cd, proxies, now, events) {
        update_followers(cd);
        return true;
    }

    let failure = if !cur.status.healthy {
        Some(MasterFailure::Unhealthy)
    } else if convergence(&cur, cd.cluster.spec.convergence_timeout(), memory, now)
        == Convergence::Failed
    {
        // E.g. a promotion not done within convergenceTimeout.
        Some(MasterFailure::ConvergenceFailed)
    } else {
        None
    };

    if paused {
        // Maintenance: the health status stays current and new proxies are still enabled,
        // but nothing about the dbs changes.
        if failure.is_some() {
            events.push(Event::FailoverPaused {
                db: cur_uid.clone(),
            });
        }
        switch_proxies(cd, proxies, events);
    } else if let Some(why) = failure {
        events.push(Event::MasterFailed {
            db: cur_uid.clone(),
            keeper: cur.spec.keeper_uid.clone(),
            why,
        });
        match choose_new_master(cd, &cur, memory, now) {
            Ok(new_master) => {
                fail_over(cd, &cur, &new_master, events);
            }
            Err(reason) => match deposed_master_to_reelect(cd, &cur) {
                Some(deposed) => {
                    events.push(Event::DeposedMasterReelected {
                        db: deposed.clone(),
                        keeper: cd
                            .dbs
                            .get(&deposed)
                            .map(|d| d.spec.keeper_uid.clone())
                            .unwrap_or_default(),
                        instead_of: cur_uid.clone(),
                    });
                    fail_over(cd, &cur, &deposed, events);
                }
                None => events.push(Event::NoEligibleMaster {
                    db: cur_uid.clone(),
                    reason,
                }),
            },
        }
    } else {
        steady_state(cd, proxies, memory, now, new_uid, events);
    }

    update_followers(cd);
    true
}

fn remove_dead_keepers(cd: &mut ClusterData, now: Time, events: &mut Vec<Event>) {
    let interval = td(cd.cluster.spec.dead_keeper_removal_interval());
    let dead: Vec<KeeperUid> = cd
        .keepers
        .values()
        .filter(|k| cd.db_of_keeper(&k.uid).is_none())
        .filter(|k| k.status.last_healthy_time + interval < now)
        .map(|k| k.uid.clone())
        .collect();
    for keeper in dead {
        cd.keepers.remove(&keeper);
        events.push(Event::DeadKeeperRemoved { keeper });
    }
}

/// Unhealthy, and last healthy before `limit`.
fn dead_since_before(k: &crate::cluster::Keeper, limit: Time) -> bool {
    !k.status.healthy && k.status.last_healthy_time < limit
}

fn choose_new_master(
    cd: &ClusterData,
    cur: &Db,
    memory: &Memory,
    now: Time,
) -> Result<DbUid, String> {
    let candidates = best_new_masters(cd, cur, memory, now);
    if candidates.is_empty() {
        return Err(
            "no healthy, converged standby on the master's timeline within \
                    maxStandbyLag whose keeper can be master"
                .into(),
        );
    }
    if !cur.spec.synchronous_replication {
        return Ok(candidates[0].uid.clone());
    }
    // Only a standby known to have been in sync may take over: anything else could miss
    // acknowledged commits.
    let in_sync: Vec<&DbUid> = cur
        .status
        .synchronous_standbys
        .iter()
        .filter(|uid| cur.spec.synchronous_standbys.contains(uid))
        .collect();
    if in_sync.is_empty() {
        return Err(format!(
            "synchronous replication: no standby known in sync (known {:?}, wanted {:?})",
            cur.status.synchronous_standbys, cur.spec.synchronous_standbys
        ));
    }
    candidates
        .iter()
        .find(|db| in_sync.contains(&&db.uid))
        .map(|db| db.uid.clone())
        .ok_or_else(|| {
            format!("synchronous replication: none of the in-sync standbys {in_sync:?} is eligible")
        })
}

/// Deliberate change from upstream: the failed master's db is deposed in the same write that
/// elects the new master: its role becomes undefined, so its keeper stops postgres at once
/// (and keeps it stopped). Upstream keeps it with role master until the new master has
/// converged; a keeper that is alive (forceFail, a keeper cut off from the store, postgres
/// flapping) then keeps a second writable master running. The deposed db is removed once the
/// new master is ready ([`remove_dbs`]); its keeper then gets a new resync db (pg_rewind with
/// usePgrewind), which is how an old master rejoins. Until then it is the fallback when the
/// new master dies before it ever served ([`deposed_master_to_reelect`]).
fn fail_over(cd: &mut ClusterData, old: &Db, new_uid: &DbUid, events: &mut Vec<Event>) {
    let spec = cd.cluster.spec.clone();
    let (new_keeper, x_log_pos) = match cd.dbs.get(new_uid) {
        Some(db) => (db.spec.keeper_uid.clone(), db.status.x_log_pos),
        None => return,
    };
    // One fallback at most: the master deposed last.
    let older: Vec<(DbUid, KeeperUid)> = cd
        .dbs
        .values()
        .filter(|d| db_type(d) == DbType::Deposed && d.uid != *new_uid && d.uid != old.uid)
        .map(|d| (d.uid.clone(), d.spec.keeper_uid.clone()))
        .collect();
    for (db, keeper) in older {
        cd.dbs.remove(&db);
        events.push(Event::DbRemoved {
            db,
            keeper,
            why: RemovalReason::FailedMaster,
        });
    }
    if let Some(db) = cd.dbs.get_mut(&old.uid) {
        db.spec.role = DbRole::Undefined;
        db.spec.follow_config = None;
        db.spec.followers.clear();
        db.spec.synchronous_standbys.clear();
        db.spec.external_synchronous_standbys.clear();
    }
    events.push(Event::MasterDeposed {
        db: old.uid.clone(),
        keeper: old.spec.keeper_uid.clone(),
    });
    let standby_cluster = spec.role() == ClusterRole::Standby;
    let external = standby_cluster.then(|| external_follow_config(cd));
    cd.cluster.status.master = Some(new_uid.clone());
    if let Some(db) = cd.dbs.get_mut(new_uid) {
        db.spec.role = if standby_cluster {
            DbRole::Standby
        } else {
            DbRole::Master
        };
        db.spec.follow_config = external;
    }
    // Phase one of the proxy switch: no proxy may route anywhere until every active proxy
    // confirmed it dropped its connections to the old master.
    if !cd.proxy.spec.master_db_uid.is_empty() {
        cd.proxy.spec.master_db_uid.clear();
        cd.proxy.generation.bump();
    }
    sync::set_new_master_sync(cd, &spec, &old.spec.synchronous_standbys, new_uid);
    // Upstream repoints the standbys only once the new master converged, leaving them
    // following the failed one meanwhile. Its db is gone here, so they follow the new master
    // at once: a standby can stream from a standby being promoted (cascading, timeline
    // `latest`), and the new master knows its followers, so it creates their slots as soon
    // as it is promoted.
    reconfigure_standbys(cd);
    events.push(Event::MasterElected {
        old: old.uid.clone(),
        new: new_uid.clone(),
        keeper: new_keeper,
        x_log_pos,
    });
}

/// The deposed master to elect again when `cur`, the master elected in its place, failed
/// before it was ever promoted: it never reported the generation that made it master (its
/// keeper reports it right after `pg_ctl promote`), so it took no write, and the deposed
/// master, whose keeper is back, has every commit (upstream's behaviour, where the old master
/// stays master). ⚠ Its keeper keeps PostgreSQL stopped meanwhile, so there is no WAL position
/// to compare: it is chosen only when no standby may take over.
fn deposed_master_to_reelect(cd: &ClusterData, cur: &Db) -> Option<DbUid> {
    if cur.status.current_generation >= cur.generation {
        return None;
    }
    cd.dbs
        .values()
        .filter(|d| db_type(d) == DbType::Deposed && d.uid != cur.uid)
        .find(|d| {
            cd.keepers
                .get(&d.spec.keeper_uid)
                .is_some_and(|k| k.status.healthy && k.status.can_be_master != Some(false))
        })
        .map(|d| d.uid.clone())
}

fn steady_state(
    cd: &mut ClusterData,
    proxies: &BTreeMap<String, &ProxyInfo>,
    memory: &Memory,
    now: Time,
    new_uid: &mut dyn FnMut() -> String,
    events: &mut Vec<Event>,
) {
    let spec = cd.cluster.spec.clone();
    let Some(master_uid) = cd.cluster.status.master.clone() else {
        return;
    };
    switch_proxies(cd, proxies, events);

    if spec.role() == ClusterRole::Master
        && let Some(master) = cd.dbs.get_mut(&master_uid)
    {
        // How `promote` turns a standby cluster into a primary one.
        master.spec.role = DbRole::Master;
        master.spec.follow_config = None;
    }

    let Some(master) = cd.dbs.get(&master_uid) else {
        return;
    };
    let ready = master.status.healthy
        && convergence(master, spec.convergence_timeout(), memory, now) == Convergence::Converged;
    if !ready {
        return;
    }

    remove_dbs(cd, memory, now, events);

    let standbys = valid_by_state(cd, DbType::Standby, memory, now);
    let good: BTreeSet<DbUid> = standbys
        .iter()
        .filter(|(_, s)| *s == DbState::Good)
        .map(|(db, _)| db.uid.clone())
        .collect();
    let converging = standbys
        .iter()
        .filter(|(_, s)| *s == DbState::Converging)
        .count();
    for uid in &good {
        if let Some(db) = cd.dbs.get_mut(uid) {
            db.spec.init_mode = DbInitMode::None;
        }
    }

    if sync_repl(&spec) {
        let best: Vec<DbUid> = match cd.master_db() {
            Some(m) => best_standbys(cd, m, memory, now)
                .into_iter()
                .map(|d| d.uid.clone())
                .collect(),
            None => Vec::new(),
        };
        let reported = cd
            .cluster
            .status
            .master
            .as_ref()
            .and_then(|uid| memory.dbs.get(uid))
            .map_or(&[][..], |m| m.reported_sync_standbys.as_slice());
        sync::update_sync_standbys(cd, &spec, &good, &best, reported, events);
    } else {
        sync::disable_sync(cd);
    }

    adjust_standby_count(cd, &good, converging, new_uid, events);
    reconfigure_standbys(cd);
}

/// Phase two of the proxy switch, and the enabled proxies list.
fn switch_proxies(
    cd: &mut ClusterData,
    proxies: &BTreeMap<String, &ProxyInfo>,
    events: &mut Vec<Event>,
) {
    let Some(master_uid) = cd.cluster.status.master.clone() else {
        return;
    };
    let active: Vec<String> = proxies.keys().cloned().collect();
    let published = &cd.proxy.spec.master_db_uid;
    if !published.is_empty() && *published != master_uid {
        // Never seen from our own writes; a hand-edited clusterdata. Start over safely.
        cd.proxy.spec.master_db_uid.clear();
        cd.proxy.generation.bump();
        return;
    }
    if cd.proxy.spec.master_db_uid.is_empty() {
        let waiting: Vec<String> = proxies
            .values()
            .filter(|p| p.generation != cd.proxy.generation)
            .map(|p| p.uid.clone())
            .collect();
        if !waiting.is_empty() {
            events.push(Event::ProxiesNotConverged {
                proxies: waiting,
                generation: cd.proxy.generation,
            });
            return;
        }
        // Clients go to the new master once it is promoted, not while it is still a standby
        // that would refuse their writes (a proxy holds them meanwhile). Upstream publishes
        // at once.
        let promoted = cd
            .dbs
            .get(&master_uid)
            .is_some_and(|m| m.status.healthy && m.status.current_generation >= m.generation);
        if !promoted {
            return;
        }
        // Upstream sets enabledProxies one check later, which delays routing by a round; the
        // proxies we just waited for are exactly the ones that may route.
        cd.proxy.spec.master_db_uid = master_uid.clone();
        cd.proxy.spec.enabled_proxies = active.clone();
        cd.proxy.generation.bump();
        events.push(Event::MasterPublished { db: master_uid });
        return;
    }
    if cd.proxy.spec.enabled_proxies != active {
        cd.proxy.spec.enabled_proxies = active.clone();
        cd.proxy.generation.bump();
        events.push(Event::EnabledProxiesChanged { proxies: active });
    }
}

/// Old masters, invalid dbs, standbys that can no longer catch up and standbys of long dead
/// keepers.
fn remove_dbs(cd: &mut ClusterData, memory: &Memory, now: Time, events: &mut Vec<Event>) {
    let Some(master_uid) = cd.cluster.status.master.clone() else {
        return;
    };
    let removal = td(cd.cluster.spec.dead_keeper_removal_interval());
    let mut remove: Vec<(DbUid, RemovalReason)> = Vec::new();
    for db in cd.dbs.values() {
        if db.uid == master_uid {
            continue;
        }
        if db_type(db) == DbType::Standby
            && cd
                .keepers
                .get(&db.spec.keeper_uid)
                .is_some_and(|k| dead_since_before(k, now - removal))
        {
            // ⚠ Upstream keeps such a db while fewer than maxStandbysPerSender standbys are
            // good, and the master keeps its slot (and WAL, without a max_slot_wal_keep_size)
            // forever. Removing the db makes the master drop the slot; the keeper itself goes
            // at the next check (no db, last healthy long ago), and if it ever comes back it
            // registers again and gets a new db.
            remove.push((db.uid.clone(), RemovalReason::DeadKeeper));
        } else if db_type(db) == DbType::Master {
            remove.push((db.uid.clone(), RemovalReason::OldMaster));
        } else if db_type(db) == DbType::Deposed {
            // The new master serves: the deposed one is no fallback any more.
            remove.push((db.uid.clone(), RemovalReason::FailedMaster));
        } else if validity(cd, db) == Validity::Invalid {
            remove.push((db.uid.clone(), RemovalReason::Invalid));
        } else if !db_can_sync(cd, db, memory) {
            remove.push((db.uid.clone(), RemovalReason::CannotSync));
        }
    }
    remove_and_report(cd, remove, events);
}

/// Removes the dbs, each with an event naming why.
fn remove_and_report(
    cd: &mut ClusterData,
    remove: Vec<(DbUid, RemovalReason)>,
    events: &mut Vec<Event>,
) {
    for (uid, why) in remove {
        if let Some(db) = cd.dbs.remove(&uid) {
            events.push(Event::DbRemoved {
                db: uid,
                keeper: db.spec.keeper_uid,
                why,
            });
        }
    }
}

fn adjust_standby_count(
    cd: &mut ClusterData,
    good: &BTreeSet<DbUid>,
    converging: usize,
    new_uid: &mut dyn FnMut() -> String,
    events: &mut Vec<Event>,
) {
    let per_sender = usize::from(cd.cluster.spec.max_standbys_per_sender());
    let Some(master_uid) = cd.cluster.status.master.clone() else {
        return;
    };
    let sync_list: Vec<DbUid> = cd
        .master_db()
        .map(|m| m.spec.synchronous_standbys.clone())
        .unwrap_or_default();

    if good.len() >= per_sender {
        let mut remove: Vec<(DbUid, RemovalReason)> = cd
            .dbs
            .values()
            .filter(|db| db.uid != master_uid && db_type(db) == DbType::Standby)
            .filter(|db| !good.contains(&db.uid) && !sync_list.contains(&db.uid))
            .map(|db| (db.uid.clone(), RemovalReason::NotGood))
            .collect();
        // Excess good standbys: the most lagging go first.
        let mut goods: Vec<&Db> = good
            .iter()
            .filter(|uid| !sync_list.contains(uid))
            .filter_map(|uid| cd.dbs.get(uid))
            .collect();
        goods.sort_by_key(|db| (db.status.x_log_pos, db.uid.clone()));
        let excess = good.len() - per_sender;
        remove.extend(
            goods
                .into_iter()
                .take(excess)
                .map(|db| (db.uid.clone(), RemovalReason::Excess)),
        );
        remove_and_report(cd, remove, events);
        return;
    }

    let wanted = per_sender.saturating_sub(good.len() + converging);
    for keeper in free_keepers(cd).into_iter().take(wanted) {
        let db = Db {
            uid: DbUid::from(new_uid()),
            generation: INITIAL_GENERATION,
            change_time: zero_time(),
            spec: DbSpec {
                keeper_uid: keeper.clone(),
                init_mode: DbInitMode::Resync,
                role: DbRole::Standby,
                followers: Vec::new(),
                follow_config: Some(FollowConfig::internal(&master_uid)),
                ..Default::default()
            },
            status: Default::default(),
        };
        events.push(Event::StandbyAdded {
            db: db.uid.clone(),
            keeper,
        });
        cd.dbs.insert(db.uid.clone(), db);
    }
}

/// Every standby follows the current master, with no followers and no sync settings.
pub(crate) fn reconfigure_standbys(cd: &mut ClusterData) {
    let Some(master_uid) = cd.cluster.status.master.clone() else {
        return;
    };
    for db in cd.dbs.values_mut() {
        if db.uid == master_uid || db_type(db) != DbType::Standby {
            continue;
        }
        db.spec.role = DbRole::Standby;
        db.spec.followers.clear();
        db.spec.follow_config = Some(FollowConfig::internal(&master_uid));
        db.spec.synchronous_replication = false;
        db.spec.synchronous_standbys.clear();
        db.spec.external_synchronous_standbys.clear();
    }
}

/// The master's followers: every db following it internally, sorted.
fn update_followers(cd: &mut ClusterData) {
    let Some(master_uid) = cd.cluster.status.master.clone() else {
        return;
    };
    let followers: Vec<DbUid> =
        cd.dbs
            .values()
            .filter(|db| db.uid != master_uid)
            .filter(|db| {
                db.spec.follow_config.as_ref().is_some_and(|f| {
                    f.follow_type == FollowType::Internal && f.db_uid == master_uid
                })
            })
            .map(|db| db.uid.clone())
            .collect();
    if let Some(master) = cd.dbs.get_mut(&master_uid) {
        master.spec.followers = followers;
    }
}
