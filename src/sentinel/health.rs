//! Keeper, db and proxy liveness (as upstream: keeper health, db health, convergence).
//!
//! Deliberate change from upstream: a keeper is unhealthy once `now - (when its infoUID was
//! last seen changing) > failInterval`. Upstream first waits for an info to be stale for a
//! sleepInterval, then starts a timer and waits failInterval more, so a failover takes up to
//! failInterval + 2×sleepInterval. Our loop runs on every watch event, so the moment an info
//! changed is known to within milliseconds and the timer can start from it. Keepers publish
//! every sleepInterval, so failInterval must stay well above sleepInterval (the defaults, 20s
//! and 5s, do).

use super::events::Event;
use super::memory::{DbMemory, InfoSeen, Memory};
use crate::cluster::{
    ClusterData, Db, DbUid, GoDuration, INITIAL_GENERATION, Keeper, KeeperInfo, KeeperStatus,
    KeeperUid, ProxiesInfo, ProxyInfo, Time, zero_time,
};
use chrono::TimeDelta;
use std::collections::{BTreeMap, BTreeSet};

pub(crate) fn td(d: GoDuration) -> TimeDelta {
    TimeDelta::nanoseconds(d.as_nanos())
}

/// Whether a keeper info may be used this check, and whether it changed in this very check.
struct Freshness {
    fresh: BTreeSet<KeeperUid>,
    changed_now: BTreeSet<KeeperUid>,
}

/// Called on every check while etcd refuses writes with its NOSPACE alarm (and on the first
/// check whose write got through again). Keepers' and proxies' publishes fail then, so their
/// infos stop changing although the processes are fine (a master keeps running: nobody can
/// elect another while the compare-and-swap is refused). Upstream judges them all failed the
/// moment the alarm clears; here every timer still running restarts at `now`, so after the
/// store is writable again each keeper gets a whole failInterval and each proxy its whole
/// window to publish before being judged.
///
/// A timer counts as still running unless it had run out *and* the stored clusterdata already
/// says so: the clusterdata was last written before the alarm (every write since was refused),
/// so it holds the judgement made while infos could still be published, whereas a timer that
/// ran out while the sentinel had not yet noticed the alarm (it learns of it from its own
/// refused writes) is no verdict. A keeper or db stored unhealthy and still silent stays so,
/// a proxy not enabled and still stale stays inactive. Convergence timers all restart: a
/// keeper's progress cannot be reported either.
pub(crate) fn hold_while_store_full(
    cd: &ClusterData,
    proxies: &ProxiesInfo,
    memory: &mut Memory,
    now: Time,
) {
    let fail = td(cd.cluster.spec.fail_interval());
    if memory.observing_since.is_some() {
        memory.observing_since = Some(now);
    }
    for (uid, seen) in memory.keepers.iter_mut() {
        let stored_healthy = cd.keepers.get(uid).is_none_or(|k| k.status.healthy);
        if stored_healthy || now - seen.changed_at <= fail {
            seen.changed_at = now;
        }
    }
    for (uid, mem) in memory.dbs.iter_mut() {
        let stored_healthy = cd.dbs.get(uid).is_none_or(|db| db.status.healthy);
        if let Some(since) = mem.error_since.as_mut()
            && (stored_healthy || now - *since <= fail)
        {
            *since = now;
        }
        if let Some(t) = mem.convergence.as_mut() {
            t.since = now;
        }
    }
    for (uid, seen) in memory.proxies.iter_mut() {
        let Some(info) = proxies.get(uid) else {
            continue;
        };
        if cd.proxy.spec.enabled_proxies.contains(uid)
            || now - seen.changed_at <= proxy_active_window(info)
        {
            seen.changed_at = now;
        }
    }
}

/// The grace a process stored healthy gets after this sentinel was blind: two keeper
/// publication periods (src/cluster/fencing.rs), at most failInterval.
pub(crate) fn blind_gap_grace(cd: &ClusterData) -> TimeDelta {
    let spec = &cd.cluster.spec;
    let timing = crate::cluster::FenceTiming::new(
        spec.sleep_interval().to_std(),
        spec.fail_interval().to_std(),
    );
    let grace = TimeDelta::from_std(timing.publish_every * 2).unwrap_or(TimeDelta::MAX);
    grace.min(td(spec.fail_interval()))
}

/// The time since which a process silent from then on is failed [`blind_gap_grace`] from
/// `now`: health counts failInterval from a keeper's `changed_at` (or a db's `error_since`).
fn judged_from_in_a_grace(cd: &ClusterData, now: Time) -> Time {
    now - td(cd.cluster.spec.fail_interval()) + blind_gap_grace(cd)
}

/// After this sentinel could not read the store for failInterval or more. Its memory cannot
/// tell a keeper that went silent from one that could not publish either (the store was down
/// for everyone), so upstream's rule, kept here until this, is to forget everything and judge
/// nobody for a whole failInterval. But a live keeper publishes again within one publication
/// period of the store coming back: every keeper, db and proxy stored healthy gets
/// [`blind_gap_grace`] from now, and timers only ever move later (a keeper's fence and a
/// proxy's fail-closed deadline run from before the gap, so judging later stays safe). Each
/// db must be reported healthy again before it can be elected: what was reported before the
/// gap may be stale. Measured in vm-tests (sleepInterval 1s, failInterval 2s): a host crash
/// that also took the etcd leader left the sentinels blind for 2 s, and the reset added a
/// whole failInterval to the failover.
pub(crate) fn resume_after_blind_gap(
    cd: &ClusterData,
    proxies: &ProxiesInfo,
    memory: &mut Memory,
    now: Time,
    blind_for: TimeDelta,
    events: &mut Vec<Event>,
) {
    let grace = blind_gap_grace(cd);
    let judged_from = judged_from_in_a_grace(cd, now);
    for (uid, seen) in memory.keepers.iter_mut() {
        if cd.keepers.get(uid).is_none_or(|k| k.status.healthy) {
            seen.changed_at = seen.changed_at.max(judged_from);
        }
    }
    for (uid, mem) in memory.dbs.iter_mut() {
        if let Some(since) = mem.error_since.as_mut()
            && cd.dbs.get(uid).is_none_or(|db| db.status.healthy)
        {
            *since = (*since).max(judged_from);
        }
        mem.reported_healthy_at = None;
        if let Some(t) = mem.convergence.as_mut() {
            t.since = t.since.max(now);
        }
    }
    for (uid, seen) in memory.proxies.iter_mut() {
        if let Some(info) = proxies.get(uid) {
            seen.changed_at = seen.changed_at.max(now - proxy_active_window(info) + grace);
        }
    }
    events.push(Event::ObservationResumed {
        blind_ms: blind_for.num_milliseconds(),
        grace_ms: grace.num_milliseconds(),
    });
}

/// The db just elected master was judged on its keeper's last info, which may be up to
/// failInterval old when every publication was held up (etcd electing its own leader after a
/// host crash): judged again at the next check, it would be failed right after its election
/// and, with another standby eligible, a second failover would follow the first. Its keeper
/// (and db) get [`blind_gap_grace`] from the election to publish again, as after a blind gap:
/// it is not master yet (its keeper has not promoted it), so this delays nothing it fences.
/// Seen once in vm-tests (fast profile): the new master was judged failed 26 ms after its
/// election; only the lack of another eligible standby kept it.
pub(crate) fn grace_elected_master(
    cd: &ClusterData,
    db_uid: &DbUid,
    memory: &mut Memory,
    now: Time,
) {
    let Some(db) = cd.dbs.get(db_uid) else {
        return;
    };
    let judged_from = judged_from_in_a_grace(cd, now);
    if let Some(seen) = memory.keepers.get_mut(&db.spec.keeper_uid) {
        seen.changed_at = seen.changed_at.max(judged_from);
    }
    if let Some(since) = memory
        .dbs
        .get_mut(db_uid)
        .and_then(|m| m.error_since.as_mut())
    {
        *since = (*since).max(judged_from);
    }
}

/// Records keeper infos in memory, registers new keepers, and recomputes keeper and db health.
pub(crate) fn update_keepers_status(
    cd: &mut ClusterData,
    infos: &BTreeMap<KeeperUid, KeeperInfo>,
    memory: &mut Memory,
    now: Time,
    events: &mut Vec<Event>,
) {
    let spec = cd.cluster.spec.clone();
    let fail = td(spec.fail_interval());
    let first_check = memory.observing_since.is_none();
    if first_check {
        memory.observing_since = Some(now);
        events.push(Event::ObservationStarted);
    }

    let mut ours = BTreeMap::new();
    for (uid, info) in infos {
        if info.cluster_uid == cd.cluster.uid {
            ours.insert(uid.clone(), info);
        } else if memory.keepers.get(uid).map(|s| &s.info_uid) != Some(&info.info_uid) {
            // Logged once per publish, not on every check.
            events.push(Event::KeeperInfoWrongCluster {
                keeper: uid.clone(),
                cluster_uid: info.cluster_uid.clone(),
            });
            memory.keepers.insert(
                uid.clone(),
                InfoSeen {
                    info_uid: info.info_uid.clone(),
                    changed_at: now,
                    changed_while_observed: false,
                },
            );
        }
    }

    let fresh = record_keeper_infos(&ours, memory, now, first_check, fail);

    for uid in &fresh.fresh {
        if !cd.keepers.contains_key(uid) {
            cd.keepers
                .insert(uid.clone(), new_keeper(uid, ours[uid], now));
            events.push(Event::KeeperAdded {
                keeper: uid.clone(),
            });
        }
    }
    // Forget keepers that are gone from both the clusterdata and the store.
    memory
        .keepers
        .retain(|uid, _| cd.keepers.contains_key(uid) || infos.contains_key(uid));

    let observing_since = memory.observing_since_or(now);
    // lastHealthyTime only serves dead keeper removal (48h by default): refreshing it on every
    // check would make every check write the clusterdata, and every write triggers a check.
    // A twentieth of the removal interval (at least sleepInterval, at most a minute) is
    // precise enough and never removes a live keeper.
    let refresh = (td(spec.dead_keeper_removal_interval()) / 20)
        .min(TimeDelta::minutes(1))
        .max(td(spec.sleep_interval()));
    for (uid, keeper) in cd.keepers.iter_mut() {
        if fresh.fresh.contains(uid) {
            let info = ours[uid];
            keeper.status.can_be_master = info.can_be_master;
            keeper.status.can_be_synchronous_replica = info.can_be_synchronous_replica;
            keeper.status.priority = info.priority;
            keeper.status.boot_uuid = info.boot_uuid.clone();
            keeper.status.postgres_binary_version = info.postgres_binary_version;
        }
        let last_seen = memory
            .keepers
            .get(uid)
            .filter(|s| ours.contains_key(uid) || s.changed_while_observed)
            .map(|s| s.changed_at)
            .unwrap_or(observing_since);
        let mut healthy = now - last_seen <= fail;
        if keeper.status.force_fail {
            healthy = false;
            keeper.status.force_fail = false;
            events.push(Event::KeeperForceFailed {
                keeper: uid.clone(),
            });
        }
        let status = &mut keeper.status;
        if status.last_healthy_time == zero_time()
            || (healthy && now - status.last_healthy_time >= refresh)
        {
            status.last_healthy_time = now;
        }
        if healthy != status.healthy {
            events.push(if healthy {
                Event::KeeperHealthy {
                    keeper: uid.clone(),
                }
            } else {
                Event::KeeperUnhealthy {
                    keeper: uid.clone(),
                    silent_ms: (now - last_seen).num_milliseconds(),
                }
            });
        }
        status.healthy = healthy;
    }

    update_dbs_status(cd, &ours, &fresh, memory, now, fail, events);
}

fn record_keeper_infos(
    infos: &BTreeMap<KeeperUid, &KeeperInfo>,
    memory: &mut Memory,
    now: Time,
    first_check: bool,
    fail: TimeDelta,
) -> Freshness {
    let mut out = Freshness {
        fresh: BTreeSet::new(),
        changed_now: BTreeSet::new(),
    };
    for (uid, info) in infos {
        let changed = memory
            .keepers
            .get(uid)
            .is_none_or(|seen| seen.info_uid != info.info_uid);
        if changed {
            memory.keepers.insert(
                uid.clone(),
                InfoSeen {
                    info_uid: info.info_uid.clone(),
                    changed_at: now,
                    changed_while_observed: !first_check,
                },
            );
            if !first_check {
                out.changed_now.insert(uid.clone());
            }
        }
        if let Some(seen) = memory.keepers.get(uid)
            && seen.changed_while_observed
            && now - seen.changed_at <= fail
        {
            out.fresh.insert(uid.clone());
        }
    }
    out
}

fn new_keeper(uid: &KeeperUid, info: &KeeperInfo, now: Time) -> Keeper {
    Keeper {
        uid: uid.clone(),
        generation: INITIAL_GENERATION,
        change_time: now,
        spec: Default::default(),
        status: KeeperStatus {
            healthy: true,
            last_healthy_time: now,
            boot_uuid: info.boot_uuid.clone(),
            postgres_binary_version: info.postgres_binary_version,
            force_fail: false,
            can_be_master: info.can_be_master,
            can_be_synchronous_replica: info.can_be_synchronous_replica,
            priority: info.priority,
        },
    }
}

fn update_dbs_status(
    cd: &mut ClusterData,
    infos: &BTreeMap<KeeperUid, &KeeperInfo>,
    fresh: &Freshness,
    memory: &mut Memory,
    now: Time,
    fail: TimeDelta,
    events: &mut Vec<Event>,
) {
    let keepers_healthy: BTreeMap<&KeeperUid, bool> = cd
        .keepers
        .iter()
        .map(|(uid, k)| (uid, k.status.healthy))
        .collect();
    for (uid, db) in cd.dbs.iter_mut() {
        let keeper_uid = db.spec.keeper_uid.clone();
        let mem = memory.dbs.entry(uid.clone()).or_default();
        if fresh.fresh.contains(&keeper_uid) {
            let info = infos[&keeper_uid];
            let reported_at = memory
                .keepers
                .get(&keeper_uid)
                .map(|s| s.changed_at)
                .unwrap_or(now);
            apply_report(
                db,
                info,
                mem,
                reported_at,
                fresh.changed_now.contains(&keeper_uid),
            );
        }
        let keeper_healthy = keepers_healthy.get(&keeper_uid).copied().unwrap_or(false);
        let healthy = keeper_healthy && mem.error_since.is_none_or(|since| now - since <= fail);
        if healthy != db.status.healthy {
            events.push(if healthy {
                Event::DbHealthy {
                    db: uid.clone(),
                    keeper: keeper_uid.clone(),
                }
            } else {
                Event::DbUnhealthy {
                    db: uid.clone(),
                    keeper: keeper_uid.clone(),
                }
            });
        }
        db.status.healthy = healthy;
    }
    memory.dbs.retain(|uid, _| cd.dbs.contains_key(uid));
}

/// Copies what a fresh keeper info says about its db into the db status (upstream's rules).
fn apply_report(
    db: &mut Db,
    info: &KeeperInfo,
    mem: &mut DbMemory,
    reported_at: Time,
    new_report: bool,
) {
    let Some(pg) = info.postgres_state.as_ref().filter(|pg| pg.uid == db.uid) else {
        mem.error_since.get_or_insert(reported_at);
        mem.reported_sync_standbys.clear();
        return;
    };
    if new_report {
        if mem.last_x_log_pos == Some(pg.x_log_pos) {
            mem.x_log_pos_unchanged = mem.x_log_pos_unchanged.saturating_add(1);
        } else {
            mem.x_log_pos_unchanged = 0;
        }
        mem.last_x_log_pos = Some(pg.x_log_pos);
    }
    db.status.listen_address = pg.listen_address.clone();
    db.status.port = pg.port.clone();
    db.status.current_generation = pg.generation;
    db.status.stopped_x_log_pos = pg.stopped_x_log_pos;
    if !pg.healthy && db.spec.switchover_stop {
        // Stopped on purpose for a switchover: no failure. If the switchover is rolled back,
        // its keeper has a whole failInterval from then to start it again.
        mem.error_since = None;
        mem.reported_sync_standbys.clear();
        return;
    }
    if !pg.healthy {
        mem.error_since.get_or_insert(reported_at);
        mem.reported_sync_standbys.clear();
        return;
    }
    mem.error_since = None;
    mem.reported_healthy_at = Some(reported_at);
    // Within one timeline of one system a db's WAL position only grows. A lower report (a
    // keeper's bad read, a transient 0) would make every standby look within maxStandbyLag of
    // the master, and so electable (src/sentinel/tests/scenarios.rs has the case).
    let same_history =
        db.status.system_id == pg.system_id && db.status.timeline_id == pg.timeline_id;
    db.status.x_log_pos = if same_history {
        db.status.x_log_pos.max(pg.x_log_pos)
    } else {
        pg.x_log_pos
    };
    db.status.system_id = pg.system_id.clone();
    db.status.timeline_id = pg.timeline_id;
    db.status.timelines_history = pg.timelines_history.clone();
    db.status.pg_parameters = pg.pg_parameters.clone();
    mem.reported_sync_standbys = pg.synchronous_standbys.clone();
    db.status.older_wal_file = pg.older_wal_file.clone();
}

/// Records proxy infos and returns the active ones: those whose infoUID changed within their
/// own proxyTimeout plus a margin ([`proxy_active_window`]). A proxy seen for the first time counts as active, so
/// a live proxy is never skipped while we learn whether it is stale (upstream's rule).
pub(crate) fn active_proxies<'a>(
    infos: &'a ProxiesInfo,
    memory: &mut Memory,
    now: Time,
) -> BTreeMap<String, &'a ProxyInfo> {
    memory.proxies.retain(|uid, _| infos.contains_key(uid));
    let mut active = BTreeMap::new();
    for (uid, info) in infos {
        let seen = memory
            .proxies
            .entry(uid.clone())
            .or_insert_with(|| InfoSeen {
                info_uid: info.info_uid.clone(),
                changed_at: now,
                changed_while_observed: true,
            });
        if seen.info_uid != info.info_uid {
            seen.info_uid = info.info_uid.clone();
            seen.changed_at = now;
        }
        if now - seen.changed_at <= proxy_active_window(info) {
            active.insert(uid.clone(), info);
        }
    }
    active
}

/// ⚠ Upstream waits twice proxyTimeout. A proxy fails closed proxyTimeout after the start of its
/// last successful check, which precedes the publication the sentinel saw (src/proxy/check.rs):
/// once the sentinel has seen no publication for proxyTimeout, the proxy has stopped routing.
/// The margin covers the proxy's timer firing late on a busy host and its sessions closing;
/// the old master itself is fenced by its keeper regardless (src/cluster/fencing.rs). A master
/// change waits this long for a proxy that died, so it is most of a failover when a host with
/// a proxy crashes: an eighth of proxyTimeout (an operator who asks proxies to notice a lost
/// store within 2 s expects them to act within a fraction of that), between
/// [`PROXY_MARGIN_MIN`] and [`PROXY_MARGIN_MAX`]. It was 1 s: measured in vm-tests, the
/// last 0.75 s of a 3 s host-crash failover (fast profile) was spent here.
pub(crate) const PROXY_MARGIN_MIN: TimeDelta = TimeDelta::milliseconds(100);
pub(crate) const PROXY_MARGIN_MAX: TimeDelta = TimeDelta::seconds(1);

pub(crate) fn proxy_active_window(info: &ProxyInfo) -> TimeDelta {
    let timeout = TimeDelta::nanoseconds(info.proxy_timeout_ns.max(0));
    timeout + (timeout / 8).clamp(PROXY_MARGIN_MIN, PROXY_MARGIN_MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Convergence {
    Converged,
    Converging,
    Failed,
}

/// Whether a db reached the generation the sentinel asked for, and if not, whether it has been
/// trying for longer than `timeout` (zero: never fails).
pub(crate) fn convergence(db: &Db, timeout: GoDuration, memory: &Memory, now: Time) -> Convergence {
    if db.status.current_generation == db.generation {
        return Convergence::Converged;
    }
    if timeout.is_zero() {
        return Convergence::Converging;
    }
    let since = memory
        .dbs
        .get(&db.uid)
        .and_then(|m| m.convergence)
        .filter(|t| t.generation == db.generation)
        .map(|t| t.since)
        .unwrap_or(now);
    if now - since > td(timeout) {
        Convergence::Failed
    } else {
        Convergence::Converging
    }
}

/// Starts a timer for every db not at its wanted generation; run on the new clusterdata, so the
/// timer starts when the generation is asked for.
pub(crate) fn refresh_convergence_timers(cd: &ClusterData, memory: &mut Memory, now: Time) {
    memory.dbs.retain(|uid, _| cd.dbs.contains_key(uid));
    for (uid, db) in &cd.dbs {
        let mem = memory.dbs.entry(uid.clone()).or_default();
        if db.status.current_generation == db.generation {
            mem.convergence = None;
        } else if mem
            .convergence
            .is_none_or(|t| t.generation != db.generation)
        {
            mem.convergence = Some(super::memory::ConvergenceTimer {
                generation: db.generation,
                since: now,
            });
        }
    }
}
