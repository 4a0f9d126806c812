//! Property tests of the promises: one master at most, never a keeper that cannot be master,
//! never a standby beyond maxStandbyLag (async), always the most advanced eligible standby,
//! and with synchronous replication only a standby known in sync.

use super::world::*;
use crate::cluster::*;
use crate::sentinel::{DbMemory, Event, InfoSeen, Memory, Observed, decide};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct KeeperGen {
    x_log_pos: u64,
    /// Seconds since its infoUID last changed.
    silent_s: i64,
    /// Its info key still exists in the store.
    present: bool,
    pg_healthy: bool,
    converged: bool,
    can_be_master: Option<bool>,
    /// Another system id: can never follow nor replace the master.
    invalid: bool,
    /// Reported healthy earlier in this leadership.
    reported: bool,
    in_sync_spec: bool,
    in_sync_status: bool,
}

#[derive(Debug, Clone)]
struct Gen {
    keepers: Vec<KeeperGen>,
    sync: bool,
    max_lag: u32,
    force_fail_master: bool,
    fresh_leader: bool,
}

fn keeper_gen() -> impl Strategy<Value = KeeperGen> {
    (
        (
            0u64..3_000_000,
            0i64..45,
            any::<bool>(),
            prop::bool::weighted(0.8),
        ),
        (
            prop::bool::weighted(0.8),
            prop::option::of(any::<bool>()),
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.8),
        ),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (x_log_pos, silent_s, present, pg_healthy),
                (converged, can_be_master, invalid, reported),
                (in_sync_spec, in_sync_status),
            )| KeeperGen {
                x_log_pos,
                silent_s,
                present,
                pg_healthy,
                converged,
                can_be_master,
                invalid,
                reported,
                in_sync_spec,
                in_sync_status,
            },
        )
}

fn scenario() -> impl Strategy<Value = Gen> {
    (
        prop::collection::vec(keeper_gen(), 2..6),
        any::<bool>(),
        prop::sample::select(vec![1000u32, 100_000, 1_232_896]),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(keepers, sync, max_lag, force_fail_master, fresh_leader)| Gen {
                keepers,
                sync,
                max_lag,
                force_fail_master,
                fresh_leader,
            },
        )
}

/// Db uids for the dbs `decide` creates, distinct from the `d<i>` the scenarios build.
fn uids() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("new{n}")
    }
}

fn kid(i: usize) -> KeeperUid {
    format!("k{i}").into()
}
fn did(i: usize) -> DbUid {
    format!("d{i}").into()
}

/// Builds the stored clusterdata, the memory and the infos described by `g`; the infos report
/// exactly what is stored, so the oracle can read either.
fn build(g: &Gen) -> (ClusterData, Memory, Observed, Time) {
    let now = t0() + secs(1000);
    let spec = ClusterSpec::from_json(&format!(
        r#"{{"initMode":"new","synchronousReplication":{},"maxStandbyLag":{}}}"#,
        g.sync, g.max_lag
    ))
    .unwrap();
    let mut cd = ClusterData::new(CLUSTER_UID.into(), spec, t0());
    cd.cluster.status.phase = ClusterPhase::Normal;
    cd.cluster.status.master = Some(did(0));
    cd.proxy.spec.master_db_uid = did(0);
    let mut memory = Memory {
        observing_since: Some(now - secs(100)),
        ..Default::default()
    };
    let mut observed = Observed::default();
    let sync_spec: Vec<DbUid> = (1..g.keepers.len())
        .filter(|i| g.keepers[*i].in_sync_spec)
        .map(did)
        .collect();
    let sync_status: Vec<DbUid> = (1..g.keepers.len())
        .filter(|i| g.keepers[*i].in_sync_spec && g.keepers[*i].in_sync_status)
        .map(did)
        .collect();

    for (i, k) in g.keepers.iter().enumerate() {
        let master = i == 0;
        let converged = master || k.converged;
        cd.keepers.insert(
            kid(i),
            Keeper {
                uid: kid(i),
                generation: Generation::new(1),
                change_time: t0(),
                spec: Default::default(),
                status: KeeperStatus {
                    healthy: true,
                    last_healthy_time: now - secs(5),
                    can_be_master: k.can_be_master,
                    force_fail: master && g.force_fail_master,
                    ..Default::default()
                },
            },
        );
        let system_id = if k.invalid && !master { "other" } else { "sys" };
        let mut db = Db {
            uid: did(i),
            generation: Generation::new(2),
            change_time: t0(),
            spec: DbSpec {
                keeper_uid: kid(i),
                role: if master {
                    DbRole::Master
                } else {
                    DbRole::Standby
                },
                follow_config: (!master).then(|| FollowConfig::internal(&did(0))),
                ..Default::default()
            },
            status: DbStatus {
                healthy: true,
                current_generation: Generation::new(if converged { 2 } else { 1 }),
                system_id: system_id.into(),
                timeline_id: 1,
                x_log_pos: k.x_log_pos,
                ..Default::default()
            },
        };
        if master {
            db.spec.synchronous_replication = g.sync;
            db.spec.synchronous_standbys = sync_spec.clone();
            db.status.synchronous_standbys = sync_status.clone();
            db.spec.followers = (1..g.keepers.len()).map(did).collect();
        }
        cd.dbs.insert(did(i), db);

        let changed_at = now - secs(k.silent_s);
        memory.keepers.insert(
            kid(i),
            InfoSeen {
                info_uid: format!("i{i}"),
                changed_at,
                changed_while_observed: true,
            },
        );
        memory.dbs.insert(
            did(i),
            DbMemory {
                error_since: (!k.pg_healthy).then(|| now - secs(30)),
                reported_healthy_at: (k.reported && k.pg_healthy).then_some(changed_at),
                convergence: (!converged).then_some(crate::sentinel::ConvergenceTimer {
                    generation: Generation::new(2),
                    since: now - secs(5),
                }),
                ..Default::default()
            },
        );
        if k.present {
            observed.keepers.insert(
                kid(i),
                KeeperInfo {
                    info_uid: format!("i{i}"),
                    uid: kid(i),
                    cluster_uid: CLUSTER_UID.into(),
                    can_be_master: k.can_be_master,
                    postgres_state: Some(PostgresState {
                        uid: did(i),
                        generation: Generation::new(if converged { 2 } else { 1 }),
                        healthy: k.pg_healthy,
                        system_id: system_id.into(),
                        timeline_id: 1,
                        x_log_pos: k.x_log_pos,
                        synchronous_standbys: if master { sync_status.clone() } else { vec![] },
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
        }
    }
    if g.fresh_leader {
        memory = Memory::default();
    }
    (cd, memory, observed, now)
}

/// Independent statement of who may replace the master, from the generator's terms.
fn eligible(g: &Gen) -> Vec<usize> {
    let fail = 20;
    let master_x = g.keepers[0].x_log_pos;
    (1..g.keepers.len())
        .filter(|i| {
            let k = &g.keepers[*i];
            let alive = k.silent_s <= fail;
            let reported = k.pg_healthy && (k.reported || (k.present && alive));
            let lag_ok = if g.sync {
                k.in_sync_spec && k.in_sync_status
            } else {
                master_x.saturating_sub(k.x_log_pos) <= u64::from(g.max_lag)
            };
            alive
                && k.pg_healthy
                && k.converged
                && !k.invalid
                && k.can_be_master != Some(false)
                && reported
                && lag_ok
        })
        .collect()
}

fn master_failed(g: &Gen) -> bool {
    let k = &g.keepers[0];
    !g.fresh_leader && (k.silent_s > 20 || !k.pg_healthy || g.force_fail_master)
}

/// At most one db with role master among non-external dbs, and the master names a db.
fn assert_one_master(cd: &ClusterData) {
    let masters: Vec<&DbUid> = cd
        .dbs
        .values()
        .filter(|d| d.spec.role == DbRole::Master)
        .map(|d| &d.uid)
        .collect();
    assert!(masters.len() <= 1, "two masters: {masters:?}");
    if cd.cluster.status.phase == ClusterPhase::Normal {
        assert!(
            cd.dbs
                .contains_key(&cd.cluster.status.master.clone().unwrap_or_default()),
            "master {:?} names no db",
            cd.cluster.status.master.clone().unwrap_or_default()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn failover_picks_the_best_eligible_standby_or_none(g in scenario()) {
        let (cd, memory, observed, now) = build(&g);
        let d = decide(&cd, &observed, &memory, now, &mut uids());
        let out = d.cluster_data.clone().unwrap_or(cd.clone());
        assert_one_master(&out);
        let new_master = out.cluster.status.master.clone().unwrap_or_default();
        let candidates = eligible(&g);
        if master_failed(&g) && !candidates.is_empty() {
            let i: usize = new_master.as_str()[1..].parse().unwrap();
            prop_assert!(candidates.contains(&i), "elected {} not eligible {:?}", new_master, candidates);
            let best = candidates.iter().map(|i| g.keepers[*i].x_log_pos).max().unwrap();
            prop_assert_eq!(g.keepers[i].x_log_pos, best, "not the most advanced");
            // The promises, stated on their own:
            let keeper = &out.keepers[&kid(i)];
            prop_assert_ne!(keeper.status.can_be_master, Some(false));
            if g.sync {
                let old = &cd.dbs[&did(0)];
                prop_assert!(old.status.synchronous_standbys.contains(&new_master));
                prop_assert!(old.spec.synchronous_standbys.contains(&new_master));
            } else {
                let lag = g.keepers[0].x_log_pos.saturating_sub(g.keepers[i].x_log_pos);
                prop_assert!(lag <= u64::from(g.max_lag));
            }
            prop_assert!(d.events.iter().any(|e| matches!(e, Event::MasterElected { .. })), "no MasterElected event");
            prop_assert_eq!(&out.proxy.spec.master_db_uid, "", "proxies cut at failover");
        } else {
            prop_assert_eq!(new_master, did(0), "no failover expected");
        }
    }

    #[test]
    fn decide_is_idempotent_on_its_own_output(g in scenario()) {
        let (cd, memory, observed, now) = build(&g);
        let d1 = decide(&cd, &observed, &memory, now, &mut uids());
        let cd1 = d1.cluster_data.clone().unwrap_or(cd);
        let d2 = decide(&cd1, &observed, &d1.memory, now, &mut uids());
        // Same observations, same instant: only standbys to add may still be pending (they
        // wait for a healthy, converged master), never another election.
        prop_assert!(!d2.events.iter().any(|e| matches!(e, Event::MasterElected { .. })), "second election");
        if let Some(next) = d1.next_check_at {
            prop_assert!(next > now);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Wait(i64),
    Kill(usize),
    Revive(usize),
    Expire(usize),
    XLogPos(usize, u64),
    PgHealthy(usize, bool),
    CannotBeMaster(usize),
    ForceFail(usize),
    NewLeader,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1i64..30).prop_map(Op::Wait),
        2 => (0usize..4).prop_map(Op::Kill),
        2 => (0usize..4).prop_map(Op::Revive),
        1 => (0usize..4).prop_map(Op::Expire),
        2 => ((0usize..4), (0u64..4_000_000)).prop_map(|(k, x)| Op::XLogPos(k, x)),
        1 => ((0usize..4), any::<bool>()).prop_map(|(k, h)| Op::PgHealthy(k, h)),
        1 => (0usize..4).prop_map(Op::CannotBeMaster),
        1 => (0usize..4).prop_map(Op::ForceFail),
        1 => Just(Op::NewLeader),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A whole cluster under random failures: the invariants hold after every check.
    #[test]
    fn invariants_hold_under_random_failures(
        sync in any::<bool>(),
        uid_seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..25),
    ) {
        let spec = format!(r#"{{"synchronousReplication":{sync},"maxStandbyLag":500000}}"#);
        let mut w = World::new(&spec)
            .with_uid_seed(uid_seed)
            .with_keepers(&["k0", "k1", "k2", "k3"])
            .with_proxies(&["p1"])
            .initialized();
        for op in ops {
            let steps = match op {
                Op::Wait(s) => s,
                Op::Kill(k) => { w.kill(kid(k)); 1 }
                Op::Revive(k) => { w.keeper(kid(k)).alive = true; 1 }
                Op::Expire(k) => { w.expire(kid(k)); 1 }
                Op::XLogPos(k, x) => { w.keeper(kid(k)).x_log_pos = x; 1 }
                Op::PgHealthy(k, h) => { w.keeper(kid(k)).pg_healthy = h; 1 }
                Op::CannotBeMaster(k) => { w.keeper(kid(k)).can_be_master = Some(false); 1 }
                Op::ForceFail(k) => {
                    if let Some(keeper) = w.cd.keepers.get_mut(&kid(k)) {
                        keeper.status.force_fail = true;
                    }
                    1
                }
                Op::NewLeader => { w.memory = Memory::default(); 1 }
            };
            for _ in 0..steps {
                let before = w.cd.clone();
                let events_before = w.events.len();
                w.tick();
                assert_one_master(&w.cd);
                for db in w.cd.dbs.values() {
                    if let Some(fc) = &db.spec.follow_config
                        && fc.follow_type == FollowType::Internal
                    {
                        prop_assert!(w.cd.dbs.contains_key(&fc.db_uid), "{} follows missing {}", db.uid, fc.db_uid);
                    }
                }
                for (_, e) in &w.events[events_before..] {
                    if let Event::MasterElected { new, keeper, .. } = e {
                        // The flag as last published, not the simulated process's current one:
                        // a keeper restarted with --can-be-master=false says so in its next
                        // info, and until then nothing can tell the sentinel.
                        prop_assert_ne!(w.keepers[keeper.as_str()].published_can_be_master, Some(false));
                        let old = &before.dbs[&before.cluster.status.master.clone().unwrap_or_default()];
                        let reelected = w.events[events_before..].iter().any(|(_, e)| {
                            matches!(e, Event::DeposedMasterReelected { db, .. } if db == new)
                        });
                        if reelected {
                            // The deposed master is elected again only in place of one that
                            // never reported its promotion: it took no write.
                            prop_assert!(old.status.current_generation < old.generation);
                        } else if sync {
                            prop_assert!(old.status.synchronous_standbys.contains(new));
                        } else {
                            let lag = old.status.x_log_pos.saturating_sub(w.cd.dbs[new].status.x_log_pos);
                            prop_assert!(lag <= 500_000, "lag {}", lag);
                        }
                    }
                }
                // The proxies never route to anything but the master.
                let routed = &w.cd.proxy.spec.master_db_uid;
                prop_assert!(routed.is_empty() || *routed == w.cd.cluster.status.master.clone().unwrap_or_default());
            }
        }
    }
}
