//! Named scenarios for the keeper plan: one per rule of upstream's keeper.

use super::plan::*;
use super::state::DbState;
use crate::cluster::{
    ArchiveRecoverySettings, ClusterData, ClusterSpec, Db, DbInitMode, DbRole, DbUid, FollowConfig,
    FollowType, Generation, Keeper, KeeperUid, PitrConfig, RecoveryTargetSettings, StandbySettings,
    SuReplAccessMode, zero_time,
};

const ME: &str = "k1";
const BOOT: &str = "boot-1";

fn me() -> KeeperFacts {
    KeeperFacts {
        uid: ME.into(),
        boot_uuid: BOOT.into(),
    }
}

fn keeper(uid: &str, boot: &str) -> Keeper {
    let mut k = Keeper {
        uid: uid.into(),
        ..Default::default()
    };
    k.status.boot_uuid = boot.into();
    k
}

fn db(uid: &str, keeper: &str, role: DbRole, mode: DbInitMode, generation: i64) -> Db {
    let mut d = Db {
        uid: uid.into(),
        generation: Generation::new(generation),
        change_time: zero_time(),
        ..Default::default()
    };
    d.spec.keeper_uid = keeper.into();
    d.spec.role = role;
    d.spec.init_mode = mode;
    d.spec.max_standbys = 20;
    d.spec.additional_wal_senders = 5;
    d.status.listen_address = format!("10.0.0.{}", &keeper[1..]);
    d.status.port = "5432".into();
    d
}

/// k1 holds `mine`; k2 holds master db "m" at 10.0.0.2 when `mine` is a standby.
fn cd_with(mine: Db) -> ClusterData {
    let mut cd = ClusterData::new("c1".into(), ClusterSpec::default(), zero_time());
    cd.keepers.insert(ME.into(), keeper(ME, BOOT));
    cd.keepers.insert("k2".into(), keeper("k2", "other"));
    if mine.spec.role == DbRole::Standby {
        cd.dbs.insert(
            "m".into(),
            db("m", "k2", DbRole::Master, DbInitMode::None, 3),
        );
    }
    cd.dbs.insert(mine.uid.clone(), mine);
    cd
}

fn standby_db(uid: &str, mode: DbInitMode, generation: i64) -> Db {
    let mut d = db(uid, ME, DbRole::Standby, mode, generation);
    d.spec.follow_config = Some(FollowConfig::internal(&DbUid::from("m")));
    d
}

fn local(uid: &str, generation: i64, role: LocalRole, running: bool) -> LocalState {
    LocalState {
        db_state: DbState {
            uid: uid.into(),
            generation: Generation::new(generation),
            ..Default::default()
        },
        initialized: role != LocalRole::None,
        role,
        running,
        applied: None,
        in_sync_standbys: None,
        pending_restart: false,
        pg_major: Some(15),
        holds: Holds::default(),
    }
}

fn empty_local() -> LocalState {
    local("", 0, LocalRole::None, false)
}

/// The config the plan leaves written.
fn applied_config(p: &Plan) -> Option<DesiredConfig> {
    p.actions.iter().rev().find_map(|a| match a {
        Action::WriteConfig(c) => Some(c.clone()),
        _ => None,
    })
}

fn kinds(p: &Plan) -> Vec<&'static str> {
    p.actions
        .iter()
        .map(|a| match a {
            Action::Stop(_) => "stop",
            Action::WipeFailedInit => "wipe",
            Action::SaveDbState(_) => "save",
            Action::MarkDbState { .. } => "mark",
            Action::InitDb(_) => "initdb",
            Action::StartTemporary(_) => "start-temp",
            Action::CaptureInitParameters => "capture",
            Action::SetupRoles => "roles",
            Action::Resync { .. } => "resync",
            Action::Restore { .. } => "restore",
            Action::ArchiveRecovery { .. } => "archive-recovery",
            Action::WriteConfig(_) => "write",
            Action::Start => "start",
            Action::PrepareSlots { .. } => "prepare-slots",
            Action::Promote => "promote",
            Action::StopForSwitchover => "stop-for-switchover",
            Action::Restart => "restart",
            Action::Reload => "reload",
            Action::ReleaseSyncWaiters { .. } => "release-sync-waiters",
            Action::ReconcileSlots { .. } => "slots",
        })
        .collect()
}

#[test]
fn no_cluster_data_waits_and_leaves_postgres_alone() {
    let p = plan(&me(), None, &local("d1", 1, LocalRole::Master, true), false);
    assert!(p.actions.is_empty());
    assert_eq!(p.end, PlanEnd::Wait(WaitReason::NoClusterData));
}

#[test]
fn keeper_missing_from_cluster_data_waits() {
    let mut cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::New, 1));
    cd.keepers.remove(&KeeperUid::from(ME));
    let p = plan(&me(), Some(&cd), &empty_local(), false);
    assert!(p.actions.is_empty());
    assert_eq!(p.end, PlanEnd::Wait(WaitReason::KeeperNotInClusterData));
}

#[test]
fn no_db_assigned_stops_postgres() {
    let mut cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::New, 1));
    cd.dbs.clear();
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 1, LocalRole::Master, true),
        false,
    );
    // Another master was elected in its place: stopped at once (src/keeper/exec.rs).
    assert_eq!(p.actions, vec![Action::Stop(StopReason::Deposed)]);
    assert_eq!(p.end, PlanEnd::Wait(WaitReason::NoDbAssigned));
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 1, LocalRole::Standby, true),
        false,
    );
    assert_eq!(p.actions, vec![Action::Stop(StopReason::NoDbAssigned)]);
}

#[test]
fn restarted_keeper_waits_for_sentinel_to_see_its_boot_uuid() {
    let mut cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::None, 4));
    cd.keepers.insert(ME.into(), keeper(ME, "previous-process"));
    let stopped = plan(
        &me(),
        Some(&cd),
        &local("d1", 4, LocalRole::Master, false),
        false,
    );
    assert!(stopped.actions.is_empty(), "an old master must not start");
    assert_eq!(stopped.end, PlanEnd::Wait(WaitReason::BootUuidMismatch));
    let running = plan(
        &me(),
        Some(&cd),
        &local("d1", 4, LocalRole::Master, true),
        false,
    );
    assert_eq!(
        running.actions,
        vec![Action::Stop(StopReason::BootUuidMismatch)]
    );
}

#[test]
fn fenced_master_stops_and_fenced_standby_keeps_serving_reads() {
    let cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::None, 1));
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 1, LocalRole::Master, true),
        true,
    );
    assert_eq!(p.actions, vec![Action::Stop(StopReason::Fencing)]);
    assert_eq!(p.end, PlanEnd::Wait(WaitReason::StoreUnreachable));
    let p = plan(&me(), None, &local("d1", 1, LocalRole::Standby, true), true);
    assert!(p.actions.is_empty());
}

#[test]
fn fenced_master_starts_again_when_store_is_back_and_still_master() {
    let cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::None, 1));
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 1, LocalRole::Master, false),
        false,
    );
    assert_eq!(kinds(&p), vec!["write", "start", "slots"]);
}

#[test]
fn init_new_runs_initdb_roles_then_starts_as_master() {
    let mut d = db("d1", ME, DbRole::Master, DbInitMode::New, 1);
    d.spec.followers = vec!["d2".into()];
    let cd = cd_with(d);
    let p = plan(&me(), Some(&cd), &empty_local(), false);
    assert_eq!(
        kinds(&p),
        vec!["save", "initdb", "start-temp", "roles", "stop", "mark"]
    );
    assert_eq!(p.end, PlanEnd::Replan);
    let Action::SaveDbState(first) = &p.actions[0] else {
        panic!()
    };
    assert!(first.initializing, "a crash during init must be detectable");
    assert_eq!(first.uid, "d1");
    assert_eq!(
        p.actions.last(),
        Some(&Action::MarkDbState {
            initializing: false,
            generation: None
        }),
        "complete data must survive a crash before the first start"
    );
    let p = plan(&me(), Some(&cd), &p.expected, false);
    assert_eq!(kinds(&p), vec!["write", "start", "slots", "mark"]);
    assert_eq!(
        p.actions.last(),
        Some(&Action::MarkDbState {
            initializing: false,
            generation: Some(Generation::new(1))
        })
    );
    assert_eq!(
        p.end,
        PlanEnd::Converged {
            db_uid: "d1".into(),
            generation: Generation::new(1)
        }
    );
}

#[test]
fn init_new_with_include_previous_config_captures_initdb_parameters() {
    let mut d = db("d1", ME, DbRole::Master, DbInitMode::New, 1);
    d.spec.include_previous_config = true;
    let p = plan(&me(), Some(&cd_with(d)), &empty_local(), false);
    assert_eq!(
        &kinds(&p)[..4],
        &["save", "initdb", "start-temp", "capture"]
    );
}

#[test]
fn init_new_stops_a_running_instance_before_wiping() {
    let cd = cd_with(db("d2", ME, DbRole::Master, DbInitMode::New, 1));
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 3, LocalRole::Master, true),
        false,
    );
    assert_eq!(&kinds(&p)[..3], &["save", "stop", "initdb"]);
}

#[test]
fn crashed_init_is_wiped_and_started_over() {
    let cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::New, 1));
    let mut l = local("d1", 0, LocalRole::Master, false);
    l.db_state.initializing = true;
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(&kinds(&p)[..3], &["wipe", "save", "initdb"]);
}

#[test]
fn init_existing_keeps_data_and_is_never_marked_initializing() {
    let cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::Existing, 1));
    let p = plan(
        &me(),
        Some(&cd),
        &local("", 0, LocalRole::Master, true),
        false,
    );
    assert_eq!(kinds(&p), vec!["save", "stop", "start-temp", "stop"]);
    assert_eq!(p.end, PlanEnd::Replan);
    let next = plan(&me(), Some(&cd), &p.expected, false);
    assert_eq!(kinds(&next), vec!["write", "start", "slots", "mark"]);
    let Action::SaveDbState(first) = &p.actions[0] else {
        panic!()
    };
    assert!(!first.initializing, "a crash must never wipe existing data");
}

#[test]
fn init_existing_without_pgdata_is_an_error() {
    let cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::Existing, 1));
    let p = plan(&me(), Some(&cd), &empty_local(), false);
    assert_eq!(
        p.end,
        PlanEnd::Error(PlanError::ExistingNotInitialized("d1".into()))
    );
    assert!(p.actions.is_empty());
}

#[test]
fn resync_basebackups_from_followed_db_with_our_slot_then_starts_as_standby() {
    let cd = cd_with(standby_db("d1", DbInitMode::Resync, 2));
    let p = plan(&me(), Some(&cd), &empty_local(), false);
    assert_eq!(kinds(&p), vec!["save", "resync", "mark"]);
    assert_eq!(
        p.actions[1],
        Action::Resync {
            host: "10.0.0.2".into(),
            port: "5432".into(),
            slot: "stolon_d1".into(),
            rewind: false,
        }
    );
    let p = plan(&me(), Some(&cd), &p.expected, false);
    assert_eq!(kinds(&p), vec!["write", "start", "mark"]);
    let Some(cfg) = applied_config(&p) else {
        panic!()
    };
    assert_eq!(
        cfg.recovery,
        Some(Recovery::Follow {
            db_uid: "m".into(),
            host: "10.0.0.2".into(),
            port: "5432".into(),
            slot: "stolon_d1".into()
        })
    );
}

#[test]
fn diverged_old_master_gets_a_fresh_basebackup_for_its_new_db() {
    // The old master (local role master, old db uid) is assigned a new resync db.
    let cd = cd_with(standby_db("d9", DbInitMode::Resync, 1));
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 5, LocalRole::Master, false),
        false,
    );
    assert_eq!(kinds(&p), vec!["save", "resync", "mark"]);
    let p = plan(&me(), Some(&cd), &p.expected, false);
    assert_eq!(kinds(&p), vec!["write", "start", "mark"]);
}

fn resync_rewinds(p: &Plan) -> Option<bool> {
    p.actions.iter().find_map(|a| match a {
        Action::Resync { rewind, .. } => Some(*rewind),
        _ => None,
    })
}

fn rewinding(mut d: Db) -> Db {
    d.spec.use_pg_rewind = true;
    d
}

#[test]
fn old_master_rewinds_its_data_with_use_pg_rewind() {
    let cd = cd_with(rewinding(standby_db("d9", DbInitMode::Resync, 1)));
    let old_master = local("d1", 5, LocalRole::Master, false);
    let p = plan(&me(), Some(&cd), &old_master, false);
    assert_eq!(kinds(&p), vec!["save", "resync", "mark"]);
    assert_eq!(resync_rewinds(&p), Some(true));
    // Then the standby config is written again (pg_rewind copied the source's) and it starts.
    let p = plan(&me(), Some(&cd), &p.expected, false);
    assert_eq!(kinds(&p), vec!["write", "start", "mark"]);
}

#[test]
fn forked_standby_rewinds_too() {
    let cd = cd_with(rewinding(standby_db("d9", DbInitMode::Resync, 1)));
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 3, LocalRole::Standby, true),
        false,
    );
    assert_eq!(kinds(&p), vec!["save", "stop", "resync", "mark"]);
    assert_eq!(resync_rewinds(&p), Some(true));
}

#[test]
fn no_rewind_without_use_pg_rewind_or_without_data() {
    let cd = cd_with(standby_db("d9", DbInitMode::Resync, 1));
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 5, LocalRole::Master, false),
        false,
    );
    assert_eq!(resync_rewinds(&p), Some(false));
    let cd = cd_with(rewinding(standby_db("d9", DbInitMode::Resync, 1)));
    let p = plan(&me(), Some(&cd), &empty_local(), false);
    assert_eq!(resync_rewinds(&p), Some(false));
}

#[test]
fn half_made_data_is_wiped_not_rewound() {
    let cd = cd_with(rewinding(standby_db("d9", DbInitMode::Resync, 1)));
    let mut l = local("d9", 0, LocalRole::Standby, false);
    l.db_state.initializing = true;
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["wipe", "save", "resync", "mark"]);
    assert_eq!(resync_rewinds(&p), Some(false));
}

#[test]
fn a_rewind_that_never_got_wal_flowing_is_not_repeated() {
    // The last rewound standby never received WAL (the master no longer had what it needed)
    // and was replaced: rewinding again would loop, so everything is copied.
    let cd = cd_with(rewinding(standby_db("d9", DbInitMode::Resync, 1)));
    let mut l = local("d1", 2, LocalRole::Standby, false);
    l.db_state.rewound = true;
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(resync_rewinds(&p), Some(false));
}

#[test]
fn resync_waits_until_followed_db_published_its_address() {
    let mut cd = cd_with(standby_db("d1", DbInitMode::Resync, 2));
    if let Some(m) = cd.dbs.get_mut(&DbUid::from("m")) {
        m.status.listen_address.clear();
    }
    let p = plan(&me(), Some(&cd), &empty_local(), false);
    assert!(p.actions.is_empty());
    assert_eq!(
        p.end,
        PlanEnd::Wait(WaitReason::FollowedDbAddressUnknown("m".into()))
    );
}

#[test]
fn running_standby_is_promoted_before_anything_else() {
    let cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::None, 5));
    let mut l = local("d1", 4, LocalRole::Standby, true);
    l.applied = Some(standby_config_for(&cd_with(standby_db(
        "d1",
        DbInitMode::None,
        4,
    ))));
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(
        p.actions[0],
        Action::PrepareSlots {
            followers: Vec::new()
        }
    );
    assert_eq!(p.actions[1], Action::Promote);
    assert_eq!(
        kinds(&p),
        vec![
            "prepare-slots",
            "promote",
            "write",
            "reload",
            "slots",
            "mark"
        ]
    );
}

fn standby_config_for(cd: &ClusterData) -> DesiredConfig {
    let p = plan(
        &me(),
        Some(cd),
        &local("d1", 0, LocalRole::Standby, false),
        false,
    );
    applied_config(&p).unwrap()
}

#[test]
fn stopped_standby_to_master_starts_as_standby_then_promotes() {
    let cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::None, 5));
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 4, LocalRole::Standby, false),
        false,
    );
    assert_eq!(
        kinds(&p),
        vec![
            "write",
            "start",
            "prepare-slots",
            "promote",
            "slots",
            "mark"
        ]
    );
    let Action::WriteConfig(c) = &p.actions[0] else {
        panic!()
    };
    assert_eq!(c.recovery, None, "promotion, not a config, ends recovery");
}

#[test]
fn master_keeps_a_slot_per_follower_but_not_for_itself() {
    let mut d = db("d1", ME, DbRole::Master, DbInitMode::None, 1);
    d.spec.followers = vec!["d3".into(), "d1".into(), "d2".into()];
    d.spec.additional_replication_slots = vec!["backup".into()];
    let p = plan(
        &me(),
        Some(&cd_with(d)),
        &local("d1", 1, LocalRole::Master, false),
        false,
    );
    assert!(p.actions.contains(&Action::ReconcileSlots {
        followers: vec!["d2".into(), "d3".into()],
        additional: vec!["backup".into()],
    }));
}

#[test]
fn converged_master_only_reconciles_slots() {
    let cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::None, 1));
    let first = plan(
        &me(),
        Some(&cd),
        &local("d1", 0, LocalRole::Master, false),
        false,
    );
    let mut l = local("d1", 1, LocalRole::Master, true);
    l.applied = applied_config(&first);
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["slots"]);
    assert_eq!(
        p.end,
        PlanEnd::Converged {
            db_uid: "d1".into(),
            generation: Generation::new(1)
        }
    );
    // A converged db's plan is bookkeeping: the keeper keeps its sleepInterval pace.
    assert!(!p.actions.iter().any(Action::changes_postgres));
    assert!(first.actions.iter().any(Action::changes_postgres));
}

#[test]
fn changed_parameters_are_rewritten_and_reloaded_and_generation_recorded() {
    let mut d = db("d1", ME, DbRole::Master, DbInitMode::None, 1);
    let cd = cd_with(d.clone());
    let first = plan(
        &me(),
        Some(&cd),
        &local("d1", 0, LocalRole::Master, false),
        false,
    );
    d.generation = Generation::new(2);
    d.spec.pg_parameters.insert("work_mem".into(), "8MB".into());
    let mut l = local("d1", 1, LocalRole::Master, true);
    l.applied = applied_config(&first);
    let p = plan(&me(), Some(&cd_with(d)), &l, false);
    assert_eq!(kinds(&p), vec!["write", "reload", "slots", "mark"]);
    let Action::WriteConfig(c) = &p.actions[0] else {
        panic!()
    };
    assert_eq!(
        c.parameters.get("work_mem").map(String::as_str),
        Some("8MB")
    );
    assert_eq!(
        p.actions.last(),
        Some(&Action::MarkDbState {
            initializing: false,
            generation: Some(Generation::new(2))
        })
    );
}

#[test]
fn new_synchronous_standbys_are_made_to_confirm_after_the_reload() {
    // Just promoted: the sentinel names no standby yet (the fake one holds commits back).
    let mut d = db("d1", ME, DbRole::Master, DbInitMode::None, 1);
    d.spec.synchronous_replication = true;
    d.spec.external_synchronous_standbys = vec!["stolonfakestandby".into()];
    let first = plan(
        &me(),
        Some(&cd_with(d.clone())),
        &local("d1", 0, LocalRole::Master, false),
        false,
    );
    let mut l = local("d1", 1, LocalRole::Master, true);
    l.applied = applied_config(&first);
    l.in_sync_standbys = Some(vec![]);
    // Then it names d2: commits made meanwhile wait for d2's next confirmation.
    d.generation = Generation::new(2);
    d.spec.external_synchronous_standbys.clear();
    d.spec.synchronous_standbys = vec!["d2".into()];
    let p = plan(&me(), Some(&cd_with(d.clone())), &l, false);
    assert_eq!(
        kinds(&p),
        vec!["write", "reload", "release-sync-waiters", "slots", "mark"]
    );
    assert!(p.actions.contains(&Action::ReleaseSyncWaiters {
        standbys: vec!["d2".into()]
    }));

    // Another parameter changes, the standbys stay: nothing to release.
    l.applied = applied_config(&p);
    l.in_sync_standbys = Some(vec!["d2".into()]);
    d.generation = Generation::new(3);
    d.spec.pg_parameters.insert("work_mem".into(), "8MB".into());
    let p = plan(&me(), Some(&cd_with(d.clone())), &l, false);
    assert_eq!(kinds(&p), vec!["write", "reload", "slots", "mark"]);

    // Asynchronous again: no standby to wake.
    l.applied = applied_config(&p);
    d.generation = Generation::new(4);
    d.spec.synchronous_replication = false;
    let p = plan(&me(), Some(&cd_with(d)), &l, false);
    assert_eq!(kinds(&p), vec!["write", "reload", "slots", "mark"]);
}

/// A converged standby of "m" (config applied, running) and the cluster data in which the
/// sentinel repointed it to k3's db "n" (a failover).
fn repointed_standby() -> (LocalState, ClusterData) {
    let cd = cd_with(standby_db("d1", DbInitMode::None, 2));
    let mut l = local("d1", 2, LocalRole::Standby, true);
    l.applied = Some(standby_config_for(&cd));
    // Converged: nothing to do.
    let p = plan(&me(), Some(&cd), &l, false);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    let mut cd2 = cd.clone();
    cd2.dbs.insert(
        "n".into(),
        db("n", "k3", DbRole::Master, DbInitMode::None, 1),
    );
    if let Some(mine) = cd2.dbs.get_mut(&DbUid::from("d1")) {
        mine.spec.follow_config = Some(FollowConfig::internal(&DbUid::from("n")));
        mine.generation = Generation::new(3);
    }
    (l, cd2)
}

fn follows_n(p: &Plan) -> bool {
    let Action::WriteConfig(c) = &p.actions[0] else {
        return false;
    };
    matches!(&c.recovery, Some(Recovery::Follow { host, db_uid, .. }) if host == "10.0.0.3" && db_uid == "n")
}

#[test]
fn repointed_standby_reloads_on_pg13_plus() {
    let (mut l, cd) = repointed_standby();
    for major in [13, 15, 17] {
        l.pg_major = Some(major);
        let p = plan(&me(), Some(&cd), &l, false);
        assert_eq!(
            kinds(&p),
            vec!["write", "reload", "mark"],
            "PostgreSQL {major}"
        );
        assert!(follows_n(&p), "{:?}", p.actions);
        assert!(p.expected.running);
        assert_eq!(
            p.end,
            PlanEnd::Converged {
                db_uid: "d1".into(),
                generation: Generation::new(3)
            }
        );
    }
}

#[test]
fn repointed_standby_restarts_before_pg13() {
    let (mut l, cd) = repointed_standby();
    for major in [10, 12] {
        l.pg_major = Some(major);
        let p = plan(&me(), Some(&cd), &l, false);
        assert_eq!(
            kinds(&p),
            vec!["write", "restart", "mark"],
            "PostgreSQL {major}"
        );
        assert!(follows_n(&p), "{:?}", p.actions);
    }
}

#[test]
fn repointed_standby_restarts_when_the_version_is_unknown() {
    let (mut l, cd) = repointed_standby();
    l.pg_major = None;
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["write", "restart", "mark"]);
}

#[test]
fn repointed_standby_restarts_once_when_a_restart_is_pending() {
    let (mut l, mut cd) = repointed_standby();
    l.pending_restart = true;
    // Without automaticPgRestart the pending restart is the operator's: reload only.
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["write", "reload", "mark"]);
    cd.cluster.spec.automatic_pg_restart = Some(true);
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["write", "restart", "mark"]);
}

#[test]
fn running_standby_without_known_recovery_settings_restarts() {
    let (mut l, cd) = repointed_standby();
    // The last write failed half way: what the instance follows is unknown.
    l.applied = None;
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["write", "restart", "mark"]);
    // Written for a promotion that did not happen (no recovery settings).
    let mut master_config = standby_config_for(&cd);
    master_config.recovery = None;
    l.applied = Some(master_config);
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["write", "restart", "mark"]);
}

#[test]
fn standby_switching_to_an_external_master_reloads_on_pg13_plus() {
    let (l, mut cd) = repointed_standby();
    if let Some(mine) = cd.dbs.get_mut(&DbUid::from("d1")) {
        mine.spec.follow_config = Some(FollowConfig {
            follow_type: crate::cluster::FollowType::External,
            db_uid: DbUid::default(),
            standby_settings: Some(crate::cluster::StandbySettings {
                primary_conninfo: "host=192.0.2.1 port=5432".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["write", "reload", "slots", "mark"]);
}

#[test]
fn stopped_repointed_standby_just_starts_with_the_new_config() {
    let (mut l, cd) = repointed_standby();
    l.running = false;
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["write", "start", "mark"]);
    assert!(follows_n(&p));
}

#[test]
fn standby_parameter_change_only_reloads() {
    let cd = cd_with(standby_db("d1", DbInitMode::None, 2));
    let mut l = local("d1", 2, LocalRole::Standby, true);
    l.applied = Some(standby_config_for(&cd));
    let mut cd2 = cd.clone();
    if let Some(mine) = cd2.dbs.get_mut(&DbUid::from("d1")) {
        mine.spec
            .pg_parameters
            .insert("work_mem".into(), "8MB".into());
    }
    let p = plan(&me(), Some(&cd2), &l, false);
    assert_eq!(kinds(&p), vec!["write", "reload"]);
}

#[test]
fn master_is_never_turned_into_a_standby_in_place() {
    let cd = cd_with(standby_db("d1", DbInitMode::None, 2));
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 1, LocalRole::Master, true),
        false,
    );
    assert_eq!(p.actions, vec![Action::Stop(StopReason::Demoted)]);
    assert_eq!(p.end, PlanEnd::Error(PlanError::MasterToStandby));
}

#[test]
fn other_db_uid_with_init_mode_none_is_lost_data() {
    let cd = cd_with(db("d2", ME, DbRole::Master, DbInitMode::None, 1));
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 1, LocalRole::Master, false),
        false,
    );
    assert!(p.actions.is_empty());
    assert!(matches!(p.end, PlanEnd::Error(PlanError::LostDb { .. })));
}

#[test]
fn undefined_role_waits_after_init() {
    let cd = cd_with(db("d1", ME, DbRole::Undefined, DbInitMode::New, 1));
    let p = plan(&me(), Some(&cd), &empty_local(), false);
    assert_eq!(
        kinds(&p),
        vec!["save", "initdb", "start-temp", "roles", "stop", "mark"]
    );
    let p = plan(&me(), Some(&cd), &p.expected, false);
    assert!(p.actions.is_empty());
    assert_eq!(p.end, PlanEnd::Wait(WaitReason::RoleUndefined));
}

#[test]
fn a_deposed_master_is_stopped_at_once_and_kept_stopped() {
    // At failover the sentinel keeps the old master's db with role undefined.
    let cd = cd_with(db("d1", ME, DbRole::Undefined, DbInitMode::None, 6));
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 5, LocalRole::Master, true),
        false,
    );
    assert_eq!(p.actions, vec![Action::Stop(StopReason::Deposed)]);
    assert_eq!(p.end, PlanEnd::Wait(WaitReason::RoleUndefined));
    let p = plan(&me(), Some(&cd), &p.expected, false);
    assert!(p.actions.is_empty(), "never started again while deposed");
}

#[test]
fn sync_master_restart_keeps_clients_out_until_standbys_in_sync() {
    let mut d = db("d1", ME, DbRole::Master, DbInitMode::None, 1);
    d.spec.synchronous_replication = true;
    d.spec.synchronous_standbys = vec!["d2".into()];
    let cd = cd_with(d);
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 1, LocalRole::Master, false),
        false,
    );
    let cfg = applied_config(&p).unwrap();
    assert!(cfg.hba.internal_only);
    assert_eq!(cfg.synchronous_standbys, vec!["d2"]);

    let mut l = local("d1", 1, LocalRole::Master, true);
    l.applied = Some(cfg);
    l.in_sync_standbys = Some(vec![]);
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["slots"], "still waiting for d2");

    l.in_sync_standbys = Some(vec!["d2".into()]);
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["write", "reload", "slots"]);
    assert!(!applied_config(&p).unwrap().hba.internal_only);
}

#[test]
fn strict_access_mode_opens_master_only_to_other_dbs() {
    let mut cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::None, 1));
    cd.cluster.spec.default_su_repl_access_mode = Some(SuReplAccessMode::Strict);
    cd.dbs.insert(
        "d2".into(),
        db("d2", "k2", DbRole::Standby, DbInitMode::None, 1),
    );
    cd.dbs.insert(
        "d3".into(),
        db("d3", "k3", DbRole::Standby, DbInitMode::None, 1),
    );
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 1, LocalRole::Master, false),
        false,
    );
    let cfg = applied_config(&p).unwrap();
    assert_eq!(cfg.hba.access_mode, SuReplAccessMode::Strict);
    assert_eq!(cfg.hba.other_db_addresses, vec!["10.0.0.2", "10.0.0.3"]);
}

#[test]
fn include_previous_config_merges_captured_parameters_under_the_spec() {
    let mut d = db("d1", ME, DbRole::Master, DbInitMode::None, 1);
    d.spec.include_previous_config = true;
    d.spec
        .pg_parameters
        .insert("shared_buffers".into(), "256MB".into());
    let mut l = local("d1", 1, LocalRole::Master, false);
    l.db_state
        .init_pg_parameters
        .insert("shared_buffers".into(), "128MB".into());
    l.db_state
        .init_pg_parameters
        .insert("max_connections".into(), "100".into());
    let p = plan(&me(), Some(&cd_with(d)), &l, false);
    let cfg = applied_config(&p).unwrap();
    assert_eq!(cfg.parameters["shared_buffers"], "256MB");
    assert_eq!(cfg.parameters["max_connections"], "100");
}

fn pitr_db(role: DbRole, target: Option<RecoveryTargetSettings>) -> Db {
    let mut d = db("d1", ME, role, DbInitMode::Pitr, 1);
    d.spec.pitr_config = Some(PitrConfig {
        data_restore_command: "cp -a /backup/. %d".into(),
        archive_recovery_settings: Some(ArchiveRecoverySettings {
            restore_command: "cp /archive/%f %p".into(),
        }),
        recovery_target_settings: target,
    });
    d
}

#[test]
fn pitr_restores_recovers_from_the_archive_then_starts_as_master() {
    let target = RecoveryTargetSettings {
        recovery_target_name: "before_b".into(),
        ..Default::default()
    };
    let cd = cd_with(pitr_db(DbRole::Master, Some(target.clone())));
    let p = plan(&me(), Some(&cd), &empty_local(), false);
    assert_eq!(
        kinds(&p),
        vec![
            "save",
            "restore",
            "archive-recovery",
            "roles",
            "stop",
            "mark"
        ]
    );
    assert_eq!(
        p.actions[1],
        Action::Restore {
            command: "cp -a /backup/. %d".into(),
            standby: false
        }
    );
    let Action::ArchiveRecovery {
        restore_command,
        target: t,
        ..
    } = &p.actions[2]
    else {
        panic!("{:?}", p.actions[2])
    };
    assert_eq!(restore_command, "cp /archive/%f %p");
    assert_eq!(t.as_ref(), Some(&target));
    assert_eq!(p.end, PlanEnd::Replan);
    let next = plan(&me(), Some(&cd), &p.expected, false);
    assert_eq!(kinds(&next), vec!["write", "start", "slots", "mark"]);
}

#[test]
fn pitr_of_a_standby_cluster_head_restores_then_follows_as_a_standby() {
    let mut d = pitr_db(DbRole::Standby, None);
    d.spec.follow_config = Some(FollowConfig {
        follow_type: FollowType::External,
        standby_settings: Some(StandbySettings {
            primary_conninfo: "host=elsewhere".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let cd = cd_with(d);
    let p = plan(&me(), Some(&cd), &empty_local(), false);
    assert_eq!(kinds(&p), vec!["save", "restore", "mark"]);
    let next = plan(&me(), Some(&cd), &p.expected, false);
    assert_eq!(kinds(&next), vec!["write", "start", "slots", "mark"]);
}

#[test]
fn pitr_without_a_restore_command_is_a_clear_error() {
    let cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::Pitr, 1));
    let p = plan(&me(), Some(&cd), &empty_local(), false);
    assert_eq!(
        p.end,
        PlanEnd::Error(PlanError::NoDataRestoreCommand("d1".into()))
    );
    assert!(p.actions.is_empty());
}

#[test]
fn pending_restart_restarts_only_with_automatic_pg_restart() {
    let mut cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::None, 1));
    let first = plan(
        &me(),
        Some(&cd),
        &local("d1", 1, LocalRole::Master, false),
        false,
    );
    let mut l = local("d1", 1, LocalRole::Master, true);
    l.applied = applied_config(&first);
    l.pending_restart = true;
    assert_eq!(kinds(&plan(&me(), Some(&cd), &l, false)), vec!["slots"]);
    cd.cluster.spec.automatic_pg_restart = Some(true);
    assert_eq!(
        kinds(&plan(&me(), Some(&cd), &l, false)),
        vec!["restart", "slots"]
    );
}

#[test]
fn crashed_resync_is_wiped_and_resynced() {
    let cd = cd_with(standby_db("d1", DbInitMode::Resync, 2));
    let mut l = local("d1", 0, LocalRole::Standby, false);
    l.db_state.initializing = true;
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["wipe", "save", "resync", "mark"]);
}

fn crash_looping(mut l: LocalState) -> LocalState {
    l.holds.crash_loop = true;
    l
}

#[test]
fn crash_looping_master_is_left_stopped_so_the_sentinel_fails_over() {
    let cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::None, 1));
    let l = crash_looping(local("d1", 1, LocalRole::Master, false));
    let p = plan(&me(), Some(&cd), &l, false);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.end, PlanEnd::Wait(WaitReason::Held(Hold::CrashLoop)));
    // Once the hold is over it starts as before.
    let mut l = l;
    l.holds = Holds::default();
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["write", "start", "slots"]);
}

#[test]
fn crash_loop_hold_leaves_a_running_master_alone() {
    // The hold only stops restarts: an instance that runs is not the one that crashed.
    let cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::None, 1));
    let first = plan(
        &me(),
        Some(&cd),
        &local("d1", 0, LocalRole::Master, false),
        false,
    );
    let mut l = crash_looping(local("d1", 1, LocalRole::Master, true));
    l.applied = applied_config(&first);
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["slots"]);
}

#[test]
fn crash_looping_standby_is_left_stopped() {
    let cd = cd_with(standby_db("d1", DbInitMode::None, 2));
    let l = crash_looping(local("d1", 2, LocalRole::Standby, false));
    let p = plan(&me(), Some(&cd), &l, false);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.end, PlanEnd::Wait(WaitReason::Held(Hold::CrashLoop)));
}

#[test]
fn crash_looping_master_that_lost_its_db_still_stops() {
    // After the failover the sentinel removed our db: nothing to hold, nothing to start.
    let mut cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::None, 1));
    cd.dbs.remove(&DbUid::from("d1"));
    let l = crash_looping(local("d1", 1, LocalRole::Master, false));
    let p = plan(&me(), Some(&cd), &l, false);
    assert!(p.actions.is_empty());
    assert_eq!(p.end, PlanEnd::Wait(WaitReason::NoDbAssigned));
}

fn resync_held(host: &str, port: &str) -> Holds {
    Holds {
        crash_loop: false,
        resync: Some(ResyncHold {
            host: host.into(),
            port: port.into(),
            failures: 2,
        }),
    }
}

#[test]
fn failed_resync_waits_for_its_back_off_before_copying_again() {
    let cd = cd_with(standby_db("d1", DbInitMode::Resync, 2));
    let mut l = local("d1", 0, LocalRole::Standby, false);
    l.db_state.initializing = true;
    l.holds = resync_held("10.0.0.2", "5432");
    let p = plan(&me(), Some(&cd), &l, false);
    // The half-made copy is wiped once; no pg_basebackup until the hold is over.
    assert_eq!(kinds(&p), vec!["wipe"]);
    let Some(WaitReason::Held(Hold::ResyncBackoff(h))) = (match &p.end {
        PlanEnd::Wait(w) => Some(w.clone()),
        _ => None,
    }) else {
        panic!("{:?}", p.end)
    };
    assert_eq!(h.failures, 2);
    let p = plan(&me(), Some(&cd), &p.expected, false);
    assert!(
        p.actions.is_empty(),
        "no wipe every iteration: {:?}",
        p.actions
    );
    let mut l = p.expected.clone();
    l.holds = Holds::default();
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["save", "resync", "mark"]);
}

#[test]
fn resync_back_off_does_not_delay_a_copy_from_another_source() {
    let cd = cd_with(standby_db("d1", DbInitMode::Resync, 2));
    let mut l = empty_local();
    l.holds = resync_held("10.0.0.9", "5432");
    let p = plan(&me(), Some(&cd), &l, false);
    assert_eq!(kinds(&p), vec!["save", "resync", "mark"]);
}

#[test]
fn max_slot_wal_keep_size_comes_from_the_cluster_spec() {
    let mut cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::None, 1));
    let l = local("d1", 1, LocalRole::Master, false);
    let cfg = applied_config(&plan(&me(), Some(&cd), &l, false)).unwrap();
    assert_eq!(cfg.parameters["max_slot_wal_keep_size"], "10GB");
    cd.cluster.spec.max_slot_wal_keep_size = Some("512MB".into());
    let cfg = applied_config(&plan(&me(), Some(&cd), &l, false)).unwrap();
    assert_eq!(cfg.parameters["max_slot_wal_keep_size"], "512MB");
}

fn standby_cluster_head(follow: FollowConfig) -> ClusterData {
    let mut head = db("d1", ME, DbRole::Standby, DbInitMode::None, 2);
    head.spec.follow_config = Some(follow);
    head.spec.followers = vec!["d2".into(), "d1".into()];
    cd_with(head)
}

#[test]
fn a_standby_cluster_head_keeps_its_own_standbys_slots() {
    let cd = standby_cluster_head(FollowConfig {
        follow_type: FollowType::External,
        standby_settings: Some(StandbySettings {
            primary_conninfo: "host=192.0.2.1".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 2, LocalRole::Standby, false),
        false,
    );
    assert!(p.actions.contains(&Action::ReconcileSlots {
        followers: vec!["d2".into()],
        additional: Vec::new(),
    }));
}

#[test]
fn an_archive_only_standby_cluster_follows_the_archive() {
    let archive = ArchiveRecoverySettings {
        restore_command: "cp /archive/%f %p".into(),
    };
    let cd = standby_cluster_head(FollowConfig {
        follow_type: FollowType::External,
        archive_recovery_settings: Some(archive.clone()),
        ..Default::default()
    });
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 2, LocalRole::Standby, false),
        false,
    );
    assert_eq!(
        applied_config(&p).and_then(|c| c.recovery),
        Some(Recovery::External {
            standby: None,
            archive: Some(archive)
        })
    );
    let nothing = standby_cluster_head(FollowConfig {
        follow_type: FollowType::External,
        ..Default::default()
    });
    let p = plan(
        &me(),
        Some(&nothing),
        &local("d1", 2, LocalRole::Standby, false),
        false,
    );
    assert_eq!(
        p.end,
        PlanEnd::Error(PlanError::NoStandbySettings("d1".into()))
    );
}

#[test]
fn a_standby_whose_data_dir_was_emptied_is_copied_again_under_its_db() {
    let cd = cd_with(standby_db("d1", DbInitMode::None, 4));
    let p = plan(&me(), Some(&cd), &empty_local(), false);
    assert_eq!(kinds(&p), vec!["save", "resync", "mark"]);
    let Action::SaveDbState(state) = &p.actions[0] else {
        panic!()
    };
    assert_eq!(state.uid, DbUid::from("d1"));
    // Data that is there but of another db is never overwritten: the data dir may be the
    // wrong one.
    let p = plan(
        &me(),
        Some(&cd),
        &local("other", 3, LocalRole::Standby, false),
        false,
    );
    assert!(matches!(p.end, PlanEnd::Error(PlanError::LostDb { .. })));
    assert!(p.actions.is_empty());
    // Nor is a master's: the sentinel fails over instead.
    let cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::None, 4));
    let p = plan(&me(), Some(&cd), &empty_local(), false);
    assert!(matches!(p.end, PlanEnd::Error(PlanError::LostDb { .. })));
}

#[test]
fn master_stops_cleanly_for_a_switchover_and_stays_stopped() {
    let mut mine = db("d1", ME, DbRole::Master, DbInitMode::None, 4);
    mine.spec.switchover_stop = true;
    let cd = cd_with(mine);
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 3, LocalRole::Master, true),
        false,
    );
    assert_eq!(kinds(&p), vec!["stop-for-switchover", "mark"]);
    assert!(matches!(p.end, PlanEnd::Converged { .. }));
    // Stopped: nothing more until the sentinel decides.
    let mut stopped = local("d1", 4, LocalRole::Master, false);
    stopped.db_state.switchover_stop_x_log_pos = Some(0x3000028);
    let p = plan(&me(), Some(&cd), &stopped, false);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
}

#[test]
fn master_stopped_for_a_switchover_follows_the_new_master_as_it_is() {
    let cd = cd_with(standby_db("d1", DbInitMode::None, 5));
    let mut stopped = local("d1", 4, LocalRole::Master, false);
    stopped.db_state.switchover_stop_x_log_pos = Some(0x3000028);
    let p = plan(&me(), Some(&cd), &stopped, false);
    assert_eq!(kinds(&p), vec!["write", "start", "mark"]);
    assert!(applied_config(&p).unwrap().recovery.is_some());
    assert_eq!(p.expected.role, LocalRole::Standby);
    assert_eq!(p.expected.db_state.switchover_stop_x_log_pos, None);
}

#[test]
fn master_rolled_back_from_a_switchover_starts_again_as_master() {
    let cd = cd_with(db("d1", ME, DbRole::Master, DbInitMode::None, 5));
    let mut stopped = local("d1", 4, LocalRole::Master, false);
    stopped.db_state.switchover_stop_x_log_pos = Some(0x3000028);
    let p = plan(&me(), Some(&cd), &stopped, false);
    assert_eq!(kinds(&p)[..2], ["write", "start"]);
    assert!(applied_config(&p).unwrap().recovery.is_none());
    assert_eq!(p.expected.role, LocalRole::Master);
}

#[test]
fn stopped_master_without_a_clean_switchover_stop_is_not_made_a_standby() {
    let cd = cd_with(standby_db("d1", DbInitMode::None, 5));
    let p = plan(
        &me(),
        Some(&cd),
        &local("d1", 4, LocalRole::Master, false),
        false,
    );
    assert_eq!(p.end, PlanEnd::Error(PlanError::MasterToStandby));
}
