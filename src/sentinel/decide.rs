//! The sentinel's decision, as one pure function: the stored clusterdata, what keepers and
//! proxies published, what the sentinel remembers and the current time go in; the clusterdata
//! to write, the new memory, events to log and the next moment worth re-checking come out.
//! No clock, no store, no tokio: every failover scenario is a unit test.

use super::elect::db_type;
use super::events::Event;
use super::health::{self, proxy_active_window, td};
use super::memory::Memory;
use super::{init, normal};
use crate::cluster::{ClusterData, ClusterPhase, KeepersInfo, ProxiesInfo, Time, zero_time};
use chrono::TimeDelta;

/// What the store said this round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub keepers: KeepersInfo,
    pub proxies: ProxiesInfo,
    /// etcd refuses writes (its NOSPACE alarm: the store is full), or refused them until this
    /// very check, whose write was the first to get through again. No keeper or proxy can
    /// publish then, so an info that stopped changing says nothing about its process: every
    /// health timer still running restarts at `now` (see `health::hold_while_store_full`), and
    /// once the store accepts writes again each process has a whole failInterval or proxy
    /// window to publish before it is judged.
    pub store_full: bool,
    /// This sentinel could not read the store for this long (failInterval or more) before
    /// this check: see `health::resume_after_blind_gap`.
    pub blind_for: Option<TimeDelta>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The clusterdata to write (compare-and-swap against the revision read), or `None` when
    /// nothing that is stored changed.
    pub cluster_data: Option<ClusterData>,
    /// Keep this for the next call, whether or not the write succeeded: it only records what
    /// was observed and when.
    pub memory: Memory,
    pub events: Vec<Event>,
    /// The earliest moment a decision could change with no new observation (a fail timer or
    /// convergence timeout expiring): the loop sleeps until then at most.
    pub next_check_at: Option<Time>,
}

/// One sentinel check as leader, after reading the store and winning the election.
///
/// `memory` is `Memory::default()` on the first call; followers call it too and keep only the
/// memory.
///
/// `new_uid` names the dbs this check creates (the loop passes `cluster::new_uid`); it is the
/// only source of randomness, so a test passing a deterministic one replays exactly.
pub fn decide(
    cd: &ClusterData,
    observed: &Observed,
    memory: &Memory,
    now: Time,
    new_uid: &mut dyn FnMut() -> String,
) -> Decision {
    let mut memory = memory.clone();
    let mut events = Vec::new();
    let mut new = cd.clone();

    if observed.store_full {
        health::hold_while_store_full(cd, &observed.proxies, &mut memory, now);
    }
    if let Some(blind_for) = observed.blind_for {
        health::resume_after_blind_gap(
            cd,
            &observed.proxies,
            &mut memory,
            now,
            blind_for,
            &mut events,
        );
    }
    health::update_keepers_status(&mut new, &observed.keepers, &mut memory, now, &mut events);
    let proxies = health::active_proxies(&observed.proxies, &mut memory, now);

    let consistent = match new.cluster.status.phase {
        ClusterPhase::Initializing => {
            init::update_initializing(&mut new, &memory, now, new_uid, &mut events);
            true
        }
        ClusterPhase::Normal => {
            normal::update_normal(&mut new, &proxies, &memory, now, new_uid, &mut events)
        }
    };

    if consistent
        && let Some(elected) = &new.cluster.status.master
        && new.cluster.status.master != cd.cluster.status.master
    {
        health::grace_elected_master(&new, elected, &mut memory, now);
    }
    copy_cluster_spec(&mut new);
    bump_generations(cd, &mut new);
    health::refresh_convergence_timers(&new, &mut memory, now);
    let next_check_at = next_check_at(&new, observed, &memory, now);

    let changed = consistent && new.to_json() != cd.to_json();
    if changed {
        set_change_times(cd, &mut new, now);
    }
    Decision {
        cluster_data: changed.then_some(new),
        memory,
        events,
        next_check_at,
    }
}

/// Every db carries the cluster-wide settings the keeper needs (upstream's
/// setDBSpecFromClusterSpec).
fn copy_cluster_spec(cd: &mut ClusterData) {
    let spec = cd.cluster.spec.clone();
    let standby = spec.standby_config.clone().unwrap_or_default();
    for db in cd.dbs.values_mut() {
        db.spec.request_timeout = spec.request_timeout();
        db.spec.max_standbys = spec.max_standbys();
        db.spec.use_pg_rewind = spec.use_pg_rewind();
        db.spec.pg_parameters = spec.pg_parameters();
        db.spec.pg_hba = spec.pg_hba.clone();
        db.spec.additional_wal_senders = spec.additional_wal_senders();
        if let Some(fc) = db.spec.follow_config.as_mut()
            && fc.follow_type == crate::cluster::FollowType::External
        {
            fc.standby_settings = standby.standby_settings.clone();
            fc.archive_recovery_settings = standby.archive_recovery_settings.clone();
        }
        db.spec.additional_replication_slots = match db_type(db) {
            super::elect::DbType::Master => spec.additional_master_replication_slots().to_vec(),
            super::elect::DbType::Standby | super::elect::DbType::Deposed => Vec::new(),
        };
    }
}

/// A keeper acts when the generation it converged to differs from the wanted one.
fn bump_generations(old: &ClusterData, new: &mut ClusterData) {
    for (uid, db) in new.dbs.iter_mut() {
        if let Some(prev) = old.dbs.get(uid)
            && prev.spec != db.spec
        {
            db.generation = prev.generation.next();
        }
    }
}

fn set_change_times(old: &ClusterData, new: &mut ClusterData, now: Time) {
    new.change_time = now;
    if new.cluster != old.cluster {
        new.cluster.change_time = now;
    }
    for (uid, db) in new.dbs.iter_mut() {
        if old.dbs.get(uid) != Some(db) {
            db.change_time = now;
        }
    }
    for (uid, keeper) in new.keepers.iter_mut() {
        if old.keepers.get(uid) != Some(keeper) {
            keeper.change_time = now;
        }
    }
    if new.proxy != old.proxy {
        new.proxy.change_time = now;
    }
}

/// The earliest future moment at which a timer expires: a keeper or db turning unhealthy, a
/// convergence timeout, a proxy turning inactive, a dead keeper to remove. The timers compare
/// with `>`, so the check must run just after the deadline.
fn next_check_at(
    cd: &ClusterData,
    observed: &Observed,
    memory: &Memory,
    now: Time,
) -> Option<Time> {
    let spec = &cd.cluster.spec;
    let fail = td(spec.fail_interval());
    let after = TimeDelta::milliseconds(1);
    let mut deadlines: Vec<Time> = Vec::new();

    let observing_since = memory.observing_since_or(now);
    deadlines.push(observing_since + fail);
    for seen in memory.keepers.values() {
        deadlines.push(seen.changed_at + fail);
    }
    for m in memory.dbs.values() {
        if let Some(since) = m.error_since {
            deadlines.push(since + fail);
        }
        if let Some(t) = m.convergence {
            for timeout in [
                spec.convergence_timeout(),
                spec.init_timeout(),
                spec.sync_timeout(),
            ] {
                if !timeout.is_zero() {
                    deadlines.push(t.since + td(timeout));
                }
            }
        }
    }
    for (uid, seen) in &memory.proxies {
        if let Some(info) = observed.proxies.get(uid) {
            deadlines.push(seen.changed_at + proxy_active_window(info));
        }
    }
    if let Some(sw) = &cd.cluster.status.switchover
        && sw.stage.before_promotion()
    {
        deadlines.push(sw.deadline());
    }
    let removal = td(spec.dead_keeper_removal_interval());
    // A dead keeper without db is removed, and so is a dead keeper's standby db.
    for k in cd.keepers.values() {
        if k.status.last_healthy_time != zero_time()
            && (cd.db_of_keeper(&k.uid).is_none() || !k.status.healthy)
        {
            deadlines.push(k.status.last_healthy_time + removal);
        }
    }
    deadlines
        .into_iter()
        .map(|d| d + after)
        .filter(|d| *d > now)
        .min()
}
