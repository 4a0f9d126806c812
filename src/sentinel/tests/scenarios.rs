//! Named scenarios, one per rule of upstream's sentinel (plus our deliberate changes).

use super::world::*;
use crate::cluster::*;
use crate::sentinel::{Event, FAKE_STANDBY_NAME, Memory, RemovalReason};

fn three() -> World {
    World::new("{}")
        .with_keepers(&["k0", "k1", "k2"])
        .with_proxies(&["p1"])
        .initialized()
}

/// A 3-keeper cluster whose master is on `k0` (uid seeds tried until the pseudo-random initial
/// pick lands there, so stories can name keepers).
fn three_with_master_on_k0(spec: &str) -> World {
    for seed in 0..100 {
        let w = World::new(spec)
            .with_uid_seed(seed)
            .with_keepers(&["k0", "k1", "k2"])
            .with_proxies(&["p1"])
            .initialized();
        if w.master_keeper() == "k0" {
            return w;
        }
    }
    panic!("no uid seed below 100 puts the initial master on k0");
}

#[test]
fn initial_new_cluster_elects_a_master() {
    let w = three();
    let master = w.master_db();
    assert_eq!(w.cd.cluster.status.phase, ClusterPhase::Normal);
    assert_eq!(master.spec.role, DbRole::Master);
    assert_eq!(master.spec.init_mode, DbInitMode::None);
    assert!(!master.spec.include_previous_config);
    assert!(w.saw(|e| matches!(e, Event::InitMasterChosen { .. })));
    assert!(w.saw(|e| matches!(e, Event::ClusterInitialized { .. })));
    // The two other keepers got standbys following the master.
    let mut followers = master.spec.followers.clone();
    followers.sort();
    let mut expected: Vec<DbUid> = ["k0", "k1", "k2"]
        .iter()
        .filter(|k| **k != w.master_keeper())
        .map(|k| w.db_uid_of(k))
        .collect();
    expected.sort();
    assert_eq!(followers, expected);
}

#[test]
fn initial_master_db_asks_for_initdb() {
    let mut w = World::new(r#"{"newConfig":{"locale":"C"}}"#).with_keepers(&["k0"]);
    w.keeper("k0").converges = false;
    w.run_until(10, |w| !w.cd.dbs.is_empty());
    let db = w.db_of("k0").unwrap();
    assert_eq!(db.spec.init_mode, DbInitMode::New);
    assert_eq!(db.spec.role, DbRole::Master);
    assert!(db.spec.include_previous_config);
    assert_eq!(db.spec.new_config.as_ref().unwrap().locale, "C");
    assert_eq!(
        w.cd.cluster.status.master.clone().unwrap_or_default(),
        db.uid
    );
    assert_eq!(w.cd.cluster.status.phase, ClusterPhase::Initializing);
}

#[test]
fn init_merges_reported_pg_parameters_into_the_spec() {
    let w = World::new("{}").with_keepers(&["k0"]).initialized();
    assert_eq!(w.cd.cluster.spec.pg_parameters, Some(Default::default()));
}

#[test]
fn initial_existing_uses_the_named_keeper() {
    let w = World::new(r#"{"initMode":"existing","existingConfig":{"keeperUID":"k2"}}"#)
        .with_keepers(&["k0", "k1", "k2"])
        .initialized();
    assert_eq!(w.master_keeper(), "k2");
    assert!(w.saw(|e| matches!(e, Event::InitMasterChosen { keeper, .. } if keeper == "k2")));
}

#[test]
fn initial_existing_waits_for_its_keeper() {
    let mut w = World::new(r#"{"initMode":"existing","existingConfig":{"keeperUID":"k9"}}"#)
        .with_keepers(&["k0"]);
    w.run_for(10);
    assert!(w.cd.dbs.is_empty());
    assert!(w.saw(|e| matches!(e, Event::InitKeeperMissing { keeper } if keeper == "k9")));
    w.add_keeper("k9");
    w.run_until(20, |w| w.cd.cluster.status.phase == ClusterPhase::Normal);
    assert_eq!(w.master_keeper(), "k9");
    assert_eq!(
        w.db_of("k9").unwrap().spec.init_mode,
        DbInitMode::None,
        "existing db finalized"
    );
}

#[test]
fn initial_pitr_creates_a_restoring_master() {
    let mut w =
        World::new(r#"{"initMode":"pitr","pitrConfig":{"dataRestoreCommand":"cp -a /backup %d"}}"#)
            .with_keepers(&["k0"]);
    w.keeper("k0").converges = false;
    w.run_until(10, |w| !w.cd.dbs.is_empty());
    let db = w.db_of("k0").unwrap();
    assert_eq!(db.spec.init_mode, DbInitMode::Pitr);
    assert_eq!(
        db.spec.pitr_config.as_ref().unwrap().data_restore_command,
        "cp -a /backup %d"
    );
    // A restore has no timeout: still waiting after an hour.
    w.run_for(3600);
    assert_eq!(w.cd.cluster.status.phase, ClusterPhase::Initializing);
    w.keeper("k0").converges = true;
    w.run_until(10, |w| w.cd.cluster.status.phase == ClusterPhase::Normal);
}

#[test]
fn failed_init_is_retried_after_init_timeout() {
    let mut w = World::new(r#"{"initTimeout":"30s"}"#).with_keepers(&["k0"]);
    w.keeper("k0").converges = false;
    w.run_until(10, |w| !w.cd.dbs.is_empty());
    let first = w.db_uid_of("k0");
    w.run_until(40, |w| w.saw(|e| matches!(e, Event::InitFailed { .. })));
    w.keeper("k0").converges = true;
    w.run_until(20, |w| w.cd.cluster.status.phase == ClusterPhase::Normal);
    assert_ne!(
        w.db_uid_of("k0"),
        first,
        "a new db is created for the retry"
    );
}

#[test]
fn initial_master_never_on_a_keeper_that_cannot_be_master() {
    for seed in 0..10 {
        let mut w = World::new("{}")
            .with_uid_seed(seed)
            .with_keepers(&["k0", "k1"]);
        w.keeper("k0").can_be_master = Some(false);
        let w = w.initialized();
        assert_eq!(w.master_keeper(), "k1");
    }
}

#[test]
fn master_dead_promotes_standby_with_highest_xlogpos() {
    let mut w = three_with_master_on_k0("{}");
    w.keeper("k0").x_log_pos = 5000;
    w.keeper("k1").x_log_pos = 4000;
    w.keeper("k2").x_log_pos = 4900;
    w.run_for(6);
    w.kill("k0");
    let killed_at = w.keepers["k0"].last_publish.unwrap();
    w.run_until(40, |w| w.master_keeper() != "k0");
    assert_eq!(w.master_keeper(), "k2", "highest xLogPos wins");
    let db = w.master_db();
    assert_eq!(db.spec.role, DbRole::Master);
    // Fast: failover exactly one tick after failInterval since the last info.
    let at = w
        .when(|e| matches!(e, Event::MasterElected { .. }))
        .unwrap();
    assert!(
        at - killed_at <= secs(21),
        "failover took {}",
        at - killed_at
    );
    assert!(at - killed_at > secs(20));
}

#[test]
fn next_check_is_scheduled_when_the_master_times_out() {
    let mut w = three_with_master_on_k0("{}");
    w.run_for(1);
    w.kill("k0");
    let last = w.keepers["k0"].last_publish.unwrap();
    w.run_for(1);
    let next = w.last.as_ref().unwrap().next_check_at.unwrap();
    assert!(next <= last + secs(21), "{next} vs last publish {last}");
    // Checking exactly then fails the master over, with no sleepInterval rounding.
    w.now = last + secs(20) + chrono::TimeDelta::milliseconds(1);
    w.check();
    assert!(w.saw(|e| matches!(e, Event::MasterElected { .. })));
}

#[test]
fn no_failover_before_fail_interval() {
    let mut w = three_with_master_on_k0("{}");
    w.kill("k0");
    let last = w.keepers["k0"].last_publish.unwrap();
    while w.now + secs(1) <= last + secs(20) {
        w.tick();
    }
    assert_eq!(w.master_keeper(), "k0");
    assert!(!w.saw(|e| matches!(e, Event::KeeperUnhealthy { .. })));
}

#[test]
fn failed_master_db_is_deposed_then_removed_and_proxies_cut() {
    let mut w = three_with_master_on_k0("{}");
    let old = w.db_uid_of("k0");
    let gen_before = w.cd.proxy.generation;
    w.kill("k0");
    w.run_until(40, |w| w.master_keeper() != "k0");
    // Deposed in the election's write: role undefined, so its keeper stops postgres.
    assert_eq!(w.cd.dbs[&old].spec.role, DbRole::Undefined);
    assert!(w.cd.dbs[&old].spec.follow_config.is_none());
    assert!(w.saw(|e| matches!(e, Event::MasterDeposed { db, .. } if *db == old)));
    let masters =
        w.cd.dbs
            .values()
            .filter(|d| d.spec.role == DbRole::Master)
            .count();
    assert_eq!(masters, 1);
    // Phase one of the proxy switch was written with the election.
    assert!(w.cd.proxy.generation > gen_before);
    // No db follows the deposed one: the standbys follow the new master at once.
    let new_master = w.cd.cluster.status.master.clone().unwrap_or_default();
    for db in
        w.cd.dbs
            .values()
            .filter(|d| d.uid != new_master && d.uid != old)
    {
        assert_eq!(db.spec.follow_config.as_ref().unwrap().db_uid, new_master);
    }
    assert_eq!(w.master_db().spec.followers.len(), 1);
    // Once the new master serves, the deposed db goes; its keeper gets a new db if it returns.
    w.run_until(30, |w| !w.cd.dbs.contains_key(&old));
    assert!(w.saw(
        |e| matches!(e, Event::DbRemoved { db, why: RemovalReason::FailedMaster, .. } if *db == old)
    ));
}

#[test]
fn deposed_master_is_elected_again_when_its_replacement_dies_before_its_promotion() {
    let mut w = three_with_master_on_k0("{}");
    // k2 may never be master: k1 is the only candidate.
    w.keeper("k2").can_be_master = Some(false);
    w.run_for(6);
    let old = w.db_uid_of("k0");
    // k1 is elected but dies before it is promoted (never reports the new generation).
    w.keeper("k1").converges = false;
    w.kill("k0");
    w.run_until(40, |w| w.master_keeper() == "k1");
    let replacement = w.db_uid_of("k1");
    w.kill("k1");
    // The old master's keeper is back (its postgres stopped, as a deposed master's keeper
    // keeps it).
    w.keeper("k0").alive = true;
    w.run_until(60, |w| w.master_keeper() == "k0");
    assert_eq!(w.cd.cluster.status.master.as_ref(), Some(&old));
    assert_eq!(w.cd.dbs[&old].spec.role, DbRole::Master);
    assert!(w.saw(|e| matches!(
        e,
        Event::DeposedMasterReelected { db, instead_of, .. } if *db == old && *instead_of == replacement
    )));
    // The standby follows it again, and the dead replacement is the deposed one now.
    let k2 = w.db_of("k2").unwrap();
    assert_eq!(k2.spec.follow_config.as_ref().unwrap().db_uid, old);
    assert_eq!(w.cd.dbs[&replacement].spec.role, DbRole::Undefined);
}

#[test]
fn deposed_master_is_not_elected_again_once_its_replacement_was_promoted() {
    let mut w = three_with_master_on_k0("{}");
    w.keeper("k2").can_be_master = Some(false);
    w.run_for(6);
    w.kill("k0");
    w.run_until(40, |w| w.master_keeper() == "k1");
    // k1 was promoted (it reported the generation that made it master): it may have taken
    // writes.
    w.run_until(30, |w| {
        let db = w.master_db();
        db.status.current_generation == db.generation
    });
    w.kill("k1");
    let promoted = w.db_uid_of("k1");
    w.run_until(40, |w| {
        w.saw(|e| matches!(e, Event::MasterFailed { db, .. } if *db == promoted))
    });
    // Only now is the old master's keeper back: its deposed db went when k1 served.
    w.keeper("k0").alive = true;
    w.run_for(40);
    assert_eq!(
        w.master_keeper(),
        "k1",
        "no master rather than a stale one:\n{}",
        w.events_text()
    );
    assert!(!w.saw(|e| matches!(e, Event::DeposedMasterReelected { .. })));
}

/// maxStandbyLag 1000, the master at 100,000 and both standbys further behind, all reported.
fn standbys_beyond_the_lag() -> World {
    let mut w = three_with_master_on_k0(r#"{"maxStandbyLag":1000}"#);
    w.keeper("k0").x_log_pos = 100_000;
    w.keeper("k1").x_log_pos = 98_000;
    w.keeper("k2").x_log_pos = 97_000;
    w.run_for(6);
    w
}

#[test]
fn lagging_standby_not_promoted() {
    let mut w = standbys_beyond_the_lag();
    w.kill("k0");
    w.run_for(30);
    assert_eq!(w.master_keeper(), "k0", "no standby within maxStandbyLag");
    assert!(w.saw(|e| matches!(e, Event::NoEligibleMaster { .. })));
    // k1 catches up to within the lag: now it may take over.
    w.keeper("k1").x_log_pos = 99_500;
    w.run_until(10, |w| w.master_keeper() == "k1");
}

/// Found by the random-failure property test: a master that reported a far lower position just
/// before it failed (0, as a keeper might on a bad read) made every standby look within
/// maxStandbyLag. Within one timeline a db's WAL position only grows, so the sentinel keeps the
/// highest it was told.
#[test]
fn a_lower_position_from_the_master_does_not_qualify_a_lagging_standby() {
    let mut w = standbys_beyond_the_lag();
    w.keeper("k0").x_log_pos = 0;
    w.run_for(6);
    assert_eq!(w.master_db().status.x_log_pos, 100_000);
    w.kill("k0");
    w.run_for(30);
    assert_eq!(w.master_keeper(), "k0", "no standby within maxStandbyLag");
    assert!(w.saw(|e| matches!(e, Event::NoEligibleMaster { .. })));
}

#[test]
fn can_be_master_false_never_elected() {
    let mut w = three_with_master_on_k0("{}");
    w.keeper("k1").can_be_master = Some(false);
    w.keeper("k1").x_log_pos = 9000;
    w.keeper("k2").x_log_pos = 1000;
    w.run_for(6);
    w.kill("k0");
    w.run_until(40, |w| w.master_keeper() != "k0");
    assert_eq!(w.master_keeper(), "k2");
}

/// Ticks until `keeper` publishes (every sleepInterval), then fails the master on that very
/// check: the election and the publish meet in one `decide`.
fn fail_master_on_next_publish_of(w: &mut World, keeper: &str) {
    let every = secs(5);
    while w.keepers[keeper]
        .last_publish
        .is_some_and(|t| w.now + secs(1) - t < every)
    {
        w.tick();
    }
    let master = w.master_keeper();
    w.cd.keepers.get_mut(&master).unwrap().status.force_fail = true;
    w.tick();
}

/// The CI failure of `invariants_hold_under_random_failures` (minimal input: `ForceFail(1),
/// Wait(3), CannotBeMaster(1), ForceFail(0)`): the flag flips right after k1 published and the
/// master fails before k1 publishes again. The sentinel elects k1: the only carrier of
/// `--can-be-master` is the keeper info, and every info k1 ever published said it may be
/// master. The test's oracle compared with the simulated process's flag, which nothing
/// transmits; it now compares with the published one.
#[test]
fn can_be_master_flip_not_yet_published_is_unknowable() {
    let mut w = three_with_master_on_k0("{}");
    w.keeper("k1").x_log_pos = 9000;
    w.run_until(10, |w| w.db_of("k1").unwrap().status.x_log_pos == 9000);
    w.cd.keepers
        .get_mut(&KeeperUid::from("k1"))
        .unwrap()
        .status
        .force_fail = true;
    w.run_until(10, |w| w.keepers["k1"].last_publish == Some(w.now));
    let published_at = w.now;
    w.run_for(3);
    w.keeper("k1").can_be_master = Some(false);
    w.cd.keepers
        .get_mut(&KeeperUid::from("k0"))
        .unwrap()
        .status
        .force_fail = true;
    w.tick();
    assert_eq!(
        w.keepers["k1"].last_publish,
        Some(published_at),
        "no publish since the flip"
    );
    assert_eq!(w.master_keeper(), "k1");
    assert_eq!(w.keepers["k1"].published_can_be_master, None);
    assert_eq!(
        w.cd.keepers[&KeeperUid::from("k1")].status.can_be_master,
        None
    );
}

/// The promise that holds: once an info says canBeMaster=false, that keeper is out of the
/// election run by the very check that reads the info, even a keeper killed, flipped while
/// dead, revived and force-failed on the way.
#[test]
fn can_be_master_false_honoured_from_the_check_that_reads_it() {
    let mut w = three_with_master_on_k0("{}");
    w.keeper("k1").x_log_pos = 9000;
    w.keeper("k2").x_log_pos = 1000;
    w.run_until(10, |w| w.db_of("k1").unwrap().status.x_log_pos == 9000);
    w.kill("k1");
    w.run_for(3);
    w.keeper("k1").can_be_master = Some(false);
    w.keeper("k1").alive = true;
    w.cd.keepers
        .get_mut(&KeeperUid::from("k1"))
        .unwrap()
        .status
        .force_fail = true;
    w.run_for(2);
    fail_master_on_next_publish_of(&mut w, "k1");
    assert_eq!(
        w.keepers["k1"].last_publish,
        Some(w.now),
        "k1 published in this check"
    );
    assert_eq!(
        w.cd.keepers[&KeeperUid::from("k1")].status.can_be_master,
        Some(false)
    );
    assert_eq!(w.master_keeper(), "k2");
}

#[test]
fn only_can_be_master_false_standbys_means_no_failover() {
    let mut w = three_with_master_on_k0("{}");
    w.keeper("k1").can_be_master = Some(false);
    w.keeper("k2").can_be_master = Some(false);
    w.run_for(6);
    w.kill("k0");
    w.run_for(40);
    assert_eq!(w.master_keeper(), "k0");
    assert!(w.saw(|e| matches!(e, Event::NoEligibleMaster { .. })));
}

#[test]
fn force_fail_triggers_failover() {
    let mut w = three_with_master_on_k0("{}");
    // What `stolonctl failkeeper k0` writes.
    w.cd.keepers
        .get_mut(&KeeperUid::from("k0"))
        .unwrap()
        .status
        .force_fail = true;
    w.tick();
    assert_ne!(w.master_keeper(), "k0");
    assert!(
        !w.cd.keepers[&KeeperUid::from("k0")].status.force_fail,
        "flag cleared"
    );
    assert!(w.saw(|e| matches!(e, Event::KeeperForceFailed { keeper } if keeper == "k0")));
    // k0 is alive: healthy again next check, and rejoins as a standby of the new master.
    let new_master = w.cd.cluster.status.master.clone().unwrap_or_default();
    w.run_until(30, |w| {
        w.db_of("k0")
            .is_some_and(|d| d.spec.follow_config.as_ref().map(|f| &f.db_uid) == Some(&new_master))
    });
    assert!(w.cd.keepers[&KeeperUid::from("k0")].status.healthy);
}

#[test]
fn promotion_not_converging_elects_another_standby() {
    let mut w = three_with_master_on_k0(r#"{"convergenceTimeout":"10s"}"#);
    w.keeper("k1").x_log_pos = 2000;
    w.keeper("k2").x_log_pos = 1500;
    w.run_for(6);
    w.keeper("k1").converges = false;
    w.kill("k0");
    w.run_until(40, |w| w.master_keeper() == "k1");
    w.run_until(30, |w| w.master_keeper() == "k2");
    assert!(w.saw(|e| matches!(
        e,
        Event::MasterFailed {
            why: crate::sentinel::MasterFailure::ConvergenceFailed,
            ..
        }
    )));
}

#[test]
fn pg_unhealthy_master_fails_over_after_fail_interval() {
    let mut w = three_with_master_on_k0("{}");
    w.keeper("k0").pg_healthy = false;
    let t = w.now;
    w.run_until(40, |w| w.master_keeper() != "k0");
    let at = w
        .when(|e| matches!(e, Event::MasterElected { .. }))
        .unwrap();
    assert!(at - t > secs(20) && at - t <= secs(27), "{}", at - t);
}

#[test]
fn proxy_switch_waits_for_all_active_proxies() {
    let mut w = World::new("{}")
        .with_keepers(&["k0", "k1"])
        .with_proxies(&["p1", "p2"])
        .initialized();
    assert_eq!(w.cd.proxy.spec.enabled_proxies, vec!["p1", "p2"]);
    let old_master = w.master_keeper();
    w.proxies.get_mut("p2").unwrap().follows = false;
    w.kill(&old_master);
    w.run_until(40, |w| w.master_keeper() != old_master);
    assert_eq!(
        w.cd.proxy.spec.master_db_uid, "",
        "phase one: nobody routes"
    );
    w.run_for(5);
    assert_eq!(w.cd.proxy.spec.master_db_uid, "", "p2 has not acknowledged");
    assert!(w.saw(|e| matches!(e, Event::ProxiesNotConverged { proxies, .. } if proxies == &vec!["p2".to_string()])));
    w.proxies.get_mut("p2").unwrap().follows = true;
    w.tick();
    assert_eq!(
        w.cd.proxy.spec.master_db_uid,
        w.cd.cluster.status.master.clone().unwrap_or_default()
    );
}

#[test]
fn stale_proxy_is_not_waited_for() {
    let mut w = World::new("{}")
        .with_keepers(&["k0", "k1"])
        .with_proxies(&["p1", "p2"])
        .initialized();
    let old_master = w.master_keeper();
    // p2 hangs: its info key stays (TTL not expired) but its infoUID never changes.
    w.proxies.get_mut("p2").unwrap().alive = false;
    w.kill(&old_master);
    w.run_until(40, |w| w.master_keeper() != old_master);
    // Inactive after 2 × its proxyTimeout (15s) without a new info.
    w.run_until(31, |w| {
        w.cd.proxy.spec.master_db_uid == w.cd.cluster.status.master.clone().unwrap_or_default()
    });
    assert_eq!(w.cd.proxy.spec.enabled_proxies, vec!["p1"]);
}

#[test]
fn a_silent_proxy_is_waited_for_its_proxy_timeout_and_an_eighth() {
    use crate::cluster::ProxyInfo;
    use crate::sentinel::health::proxy_active_window;
    let window = |timeout_ms: i64| {
        proxy_active_window(&ProxyInfo {
            proxy_timeout_ns: timeout_ms * 1_000_000,
            ..Default::default()
        })
        .num_milliseconds()
    };
    assert_eq!(window(2_000), 2_250, "fast profile");
    assert_eq!(window(5_000), 5_625);
    assert_eq!(
        window(15_000),
        16_000,
        "upstream's default: the margin stops at 1 s"
    );
    assert_eq!(window(400), 500, "at least 100 ms");
}

#[test]
fn no_proxies_master_published_once_promoted() {
    let mut w = World::new("{}").with_keepers(&["k0", "k1"]).initialized();
    let old_master = w.master_keeper();
    w.kill(&old_master);
    w.run_until(40, |w| w.master_keeper() != old_master);
    // Not while it is still a standby being promoted: it would refuse the clients' writes.
    let m = w.master_db();
    if m.status.current_generation < m.generation {
        assert!(w.cd.proxy.spec.master_db_uid.is_empty());
    }
    w.run_until(5, |w| !w.cd.proxy.spec.master_db_uid.is_empty());
    assert_eq!(
        w.cd.proxy.spec.master_db_uid,
        w.cd.cluster.status.master.clone().unwrap_or_default()
    );
    assert!(w.cd.proxy.spec.enabled_proxies.is_empty());
}

#[test]
fn free_keeper_gets_a_resync_standby() {
    let mut w = World::new("{}").with_keepers(&["k0"]).initialized();
    w.add_keeper("k1");
    w.keeper("k1").converges = false;
    w.run_until(10, |w| w.db_of("k1").is_some());
    let db = w.db_of("k1").unwrap();
    assert_eq!(db.spec.init_mode, DbInitMode::Resync);
    assert_eq!(db.spec.role, DbRole::Standby);
    let fc = db.spec.follow_config.as_ref().unwrap();
    assert_eq!(fc.follow_type, FollowType::Internal);
    assert_eq!(
        fc.db_uid,
        w.cd.cluster.status.master.clone().unwrap_or_default()
    );
    assert!(w.master_db().spec.followers.contains(&db.uid));
    assert!(w.saw(|e| matches!(e, Event::StandbyAdded { keeper, .. } if keeper == "k1")));
    // Once it has synced it is a plain standby.
    w.keeper("k1").converges = true;
    w.run_until(15, |w| {
        w.db_of("k1")
            .is_some_and(|d| d.spec.init_mode == DbInitMode::None)
    });
}

#[test]
fn standbys_capped_at_max_standbys_per_sender() {
    let w = World::new(r#"{"maxStandbysPerSender":1}"#)
        .with_keepers(&["k0", "k1", "k2"])
        .initialized();
    assert_eq!(w.cd.dbs.len(), 2);
    assert_eq!(w.master_db().spec.followers.len(), 1);
}

#[test]
fn excess_standbys_removed_when_max_lowered() {
    let mut w = three();
    w.cd.cluster.spec.max_standbys_per_sender = Some(1);
    w.run_until(5, |w| w.cd.dbs.len() == 2);
    assert!(w.saw(|e| matches!(
        e,
        Event::DbRemoved {
            why: RemovalReason::Excess,
            ..
        }
    )));
}

#[test]
fn old_master_rejoins_with_new_db() {
    let mut w = three_with_master_on_k0("{}");
    let old_db = w.db_uid_of("k0");
    w.kill("k0");
    w.run_until(40, |w| w.master_keeper() != "k0");
    // Deposed, then removed once the new master serves.
    w.run_until(30, |w| w.db_of("k0").is_none());
    let new_master = w.cd.cluster.status.master.clone().unwrap_or_default();
    w.keeper("k0").alive = true;
    w.run_until(20, |w| {
        w.db_of("k0")
            .is_some_and(|d| d.spec.init_mode == DbInitMode::None)
    });
    let db = w.db_of("k0").unwrap();
    assert_ne!(db.uid, old_db);
    assert_eq!(db.spec.role, DbRole::Standby);
    assert_eq!(db.spec.follow_config.as_ref().unwrap().db_uid, new_master);
}

#[test]
fn diverged_standby_is_removed_and_resynced() {
    let mut w = three_with_master_on_k0("{}");
    let diverged = w.db_uid_of("k1");
    w.keeper("k1").system_id = "7999999999999999999".into();
    w.run_until(10, |w| !w.cd.dbs.contains_key(&diverged));
    assert!(w.saw(|e| matches!(
        e,
        Event::DbRemoved {
            why: RemovalReason::Invalid,
            ..
        }
    )));
    w.keeper("k1").system_id = "7000000000000000001".into();
    w.run_until(10, |w| w.db_of("k1").is_some());
    assert_ne!(w.db_uid_of("k1"), diverged);
}

#[test]
fn dead_keeper_removed() {
    let mut w = World::new(r#"{"deadKeeperRemovalInterval":"60s","maxStandbysPerSender":1}"#)
        .with_keepers(&["k0", "k1", "k2"])
        .initialized();
    let spare = ["k0", "k1", "k2"]
        .into_iter()
        .find(|k| w.db_of(k).is_none())
        .unwrap();
    w.kill(spare);
    w.expire(spare);
    // Unhealthy after failInterval, removed 60 s after its last healthy time.
    w.run_until(90, |w| !w.cd.keepers.contains_key(&KeeperUid::from(spare)));
    assert!(w.saw(|e| matches!(e, Event::DeadKeeperRemoved { keeper } if keeper == spare)));
    // Keepers holding a db are never removed this way.
    assert_eq!(w.cd.keepers.len(), 2);
}

#[test]
fn sync_repl_only_promotes_in_sync_standby() {
    let mut w = three_with_master_on_k0(
        r#"{"synchronousReplication":true,"minSynchronousStandbys":1,"maxSynchronousStandbys":1}"#,
    );
    let master = w.master_db().clone();
    assert_eq!(master.spec.synchronous_standbys.len(), 1);
    assert_eq!(
        master.status.synchronous_standbys,
        master.spec.synchronous_standbys
    );
    let sync_db = master.spec.synchronous_standbys[0].clone();
    let sync_keeper = w.cd.dbs[&sync_db].spec.keeper_uid.clone();
    let other = if sync_keeper == "k1" { "k2" } else { "k1" };
    // The async one is far ahead (it can be, with sync repl the lag rule is off).
    w.keeper(other).x_log_pos = 1_000_000;
    w.run_for(6);
    w.kill("k0");
    w.run_until(40, |w| w.master_keeper() != "k0");
    assert_eq!(w.master_keeper(), sync_keeper);
}

#[test]
fn sync_repl_never_promotes_a_standby_not_known_in_sync() {
    let mut w = three_with_master_on_k0(r#"{"synchronousReplication":true}"#);
    let sync_db = w.master_db().spec.synchronous_standbys[0].clone();
    let sync_keeper = w.cd.dbs[&sync_db].spec.keeper_uid.clone();
    let other = if sync_keeper == "k1" { "k2" } else { "k1" };
    let other_db = w.db_uid_of(other);
    // The master will never report the other standby in sync.
    w.keeper("k0").in_sync = Some(vec![sync_db.clone()]);
    w.kill(&sync_keeper);
    // The sentinel asks for the other standby too, keeping the known one (merge step).
    w.run_until(40, |w| {
        w.master_db().spec.synchronous_standbys.contains(&other_db)
    });
    assert_eq!(w.master_db().status.synchronous_standbys, vec![sync_db]);
    w.kill("k0");
    w.run_for(40);
    assert_eq!(w.master_keeper(), "k0", "{}", w.events_text());
    assert!(w.saw(|e| matches!(e, Event::NoEligibleMaster { .. })));
}

#[test]
fn sync_repl_with_no_standby_uses_the_fake_standby() {
    let w = World::new(r#"{"synchronousReplication":true}"#)
        .with_keepers(&["k0"])
        .initialized();
    let m = w.master_db();
    assert!(m.spec.synchronous_replication);
    assert!(m.spec.synchronous_standbys.is_empty());
    assert_eq!(
        m.spec.external_synchronous_standbys,
        vec![FAKE_STANDBY_NAME]
    );
}

#[test]
fn sync_repl_min_zero_needs_no_fake_standby() {
    let w = World::new(r#"{"synchronousReplication":true,"minSynchronousStandbys":0}"#)
        .with_keepers(&["k0"])
        .initialized();
    assert!(w.master_db().spec.external_synchronous_standbys.is_empty());
}

#[test]
fn new_master_inherits_sync_standbys_minus_itself() {
    let mut w = three_with_master_on_k0(
        r#"{"synchronousReplication":true,"minSynchronousStandbys":1,"maxSynchronousStandbys":2}"#,
    );
    assert_eq!(w.master_db().spec.synchronous_standbys.len(), 2);
    w.kill("k0");
    w.run_until(40, |w| w.master_keeper() != "k0");
    let m = w.master_db();
    assert!(m.spec.synchronous_replication);
    assert_eq!(m.spec.synchronous_standbys.len(), 1);
    assert!(!m.spec.synchronous_standbys.contains(&m.uid));
}

#[test]
fn disabling_sync_repl_clears_sync_settings() {
    let mut w = three_with_master_on_k0(r#"{"synchronousReplication":true}"#);
    w.cd.cluster.spec.synchronous_replication = Some(false);
    w.tick();
    let m = w.master_db();
    assert!(!m.spec.synchronous_replication);
    assert!(m.spec.synchronous_standbys.is_empty());
    assert!(m.status.synchronous_standbys.is_empty());
}

#[test]
fn no_failover_before_fail_interval_after_leader_change() {
    let mut w = three_with_master_on_k0("{}");
    w.kill("k0");
    w.run_for(15);
    // Leadership moves (here: to a sentinel with a fresh memory) 5 s before this one would
    // have failed over.
    let mut w2 = w;
    w2.events.clear();
    w2.memory = Memory::default();
    let observing_since = w2.now + secs(1);
    w2.run_until(40, |w| w.master_keeper() != "k0");
    let at = w2
        .when(|e| matches!(e, Event::MasterElected { .. }))
        .unwrap();
    assert!(
        at - observing_since > secs(20),
        "failed over {} after leadership",
        at - observing_since
    );
    assert!(w2.saw(|e| *e == Event::ObservationStarted));
}

#[test]
fn standby_silent_since_leader_change_is_not_promoted() {
    let mut w = three_with_master_on_k0("{}");
    w.keeper("k1").x_log_pos = 9000;
    w.run_for(6);
    // k1 dies, then leadership changes: the stored status still says k1 is healthy.
    w.kill("k1");
    w.memory = Memory::default();
    w.kill("k0");
    w.run_until(40, |w| w.master_keeper() != "k0");
    assert_eq!(w.master_keeper(), "k2");
}

#[test]
fn keeper_info_of_another_cluster_is_ignored() {
    let mut w = World::new("{}").with_keepers(&["k0"]).initialized();
    w.add_keeper("stranger");
    w.keeper("stranger").cluster_uid = "deadbeef".into();
    w.run_for(10);
    assert!(!w.cd.keepers.contains_key(&KeeperUid::from("stranger")));
    assert!(w.saw(|e| matches!(e, Event::KeeperInfoWrongCluster { .. })));
}

#[test]
fn spec_change_is_copied_to_dbs_and_bumps_generation() {
    let mut w = three();
    let before: Vec<(DbUid, Generation)> =
        w.cd.dbs
            .values()
            .map(|d| (d.uid.clone(), d.generation))
            .collect();
    w.cd.cluster
        .spec
        .pg_parameters
        .get_or_insert_default()
        .insert("work_mem".into(), "64MB".into());
    w.tick();
    for (uid, generation) in before {
        let db = &w.cd.dbs[&uid];
        assert_eq!(db.generation, generation.next(), "{uid}");
        assert_eq!(db.spec.pg_parameters["work_mem"], "64MB");
    }
}

#[test]
fn additional_slots_only_on_the_master() {
    let w = World::new(r#"{"additionalMasterReplicationSlots":["backup"]}"#)
        .with_keepers(&["k0", "k1"])
        .initialized();
    for db in w.cd.dbs.values() {
        let expected: Vec<String> = if db.spec.role == DbRole::Master {
            vec!["backup".into()]
        } else {
            vec![]
        };
        assert_eq!(db.spec.additional_replication_slots, expected);
    }
}

#[test]
fn a_stable_cluster_writes_rarely() {
    let mut w = three();
    let writes = w.writes;
    w.run_for(60);
    // Only the once-a-minute lastHealthyTime refresh of each keeper.
    assert!(
        w.writes - writes <= 4,
        "{} writes in 60 s",
        w.writes - writes
    );
    let d = w.check().clone();
    assert!(
        d.cluster_data.is_none(),
        "a check with nothing new writes nothing"
    );
}

#[test]
fn standby_cluster_head_follows_external_primary_after_failover() {
    let spec = r#"{"initMode":"pitr","role":"standby",
        "pitrConfig":{"dataRestoreCommand":"restore %d"},
        "standbyConfig":{"standbySettings":{"primaryConninfo":"host=remote"}}}"#;
    let mut w = World::new(spec).with_keepers(&["k0", "k1"]).initialized();
    let head = w.master_db().clone();
    assert_eq!(head.spec.role, DbRole::Standby);
    let fc = head.spec.follow_config.as_ref().unwrap();
    assert_eq!(fc.follow_type, FollowType::External);
    assert_eq!(
        fc.standby_settings.as_ref().unwrap().primary_conninfo,
        "host=remote"
    );
    assert!(!head.spec.synchronous_replication);
    let head_keeper = w.master_keeper();
    w.kill(&head_keeper);
    w.run_until(40, |w| w.master_keeper() != head_keeper);
    let new_head = w.master_db();
    assert_eq!(new_head.spec.role, DbRole::Standby);
    assert_eq!(
        new_head.spec.follow_config.as_ref().unwrap().follow_type,
        FollowType::External
    );
}

#[test]
fn dead_standby_db_is_removed_after_dead_keeper_removal_interval_so_its_slot_goes() {
    // Two standbys < maxStandbysPerSender (3): upstream would keep the dead one's db, and the
    // master its slot, forever.
    let mut w = three_with_master_on_k0(r#"{"deadKeeperRemovalInterval":"60s"}"#);
    let dead_db = w.db_uid_of("k1");
    assert!(w.master_db().spec.followers.contains(&dead_db));
    let t = w.now;
    w.kill("k1");
    w.expire("k1");
    w.run_for(70);
    assert!(
        w.cd.dbs.contains_key(&dead_db),
        "kept while the keeper may come back"
    );
    w.run_until(20, |w| !w.cd.dbs.contains_key(&dead_db));
    let at = w
        .when(|e| {
            matches!(
                e,
                Event::DbRemoved {
                    why: RemovalReason::DeadKeeper,
                    ..
                }
            )
        })
        .unwrap();
    // Last healthy failInterval (20 s) after its last info, removed 60 s later.
    assert!(at - t > secs(80) && at - t <= secs(86), "{}", at - t);
    assert!(
        !w.master_db().spec.followers.contains(&dead_db),
        "the master drops the slot of a db that is no longer its follower"
    );
    w.run_until(5, |w| !w.cd.keepers.contains_key(&KeeperUid::from("k1")));
    // The healthy standby is untouched.
    assert!(w.db_of("k2").is_some());
}

#[test]
fn standby_keeper_back_before_the_removal_interval_keeps_its_db() {
    let mut w = three_with_master_on_k0(r#"{"deadKeeperRemovalInterval":"60s"}"#);
    let db = w.db_uid_of("k1");
    w.kill("k1");
    w.run_for(40);
    w.keeper("k1").alive = true;
    w.run_for(60);
    assert_eq!(w.db_uid_of("k1"), db);
    assert!(!w.saw(|e| matches!(
        e,
        Event::DbRemoved {
            why: RemovalReason::DeadKeeper,
            ..
        }
    )));
}

// etcd's NOSPACE alarm: the store is read-only for everyone, so keepers and proxies cannot
// publish and the sentinel cannot write. Their infos stop changing; that says nothing about
// them, and once the alarm clears each gets a whole failInterval (proxy window) to publish.

/// Every keeper and proxy of `three_with_master_on_k0` publishes (alive) or stays silent.
fn set_all_alive(w: &mut World, alive: bool) {
    for k in ["k0", "k1", "k2"] {
        w.keeper(k).alive = alive;
    }
    w.proxies.get_mut("p1").unwrap().alive = alive;
}

fn judged_since(w: &World, from: usize) -> Vec<String> {
    w.events[from..]
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                Event::KeeperUnhealthy { .. }
                    | Event::DbUnhealthy { .. }
                    | Event::MasterFailed { .. }
                    | Event::MasterElected { .. }
                    | Event::EnabledProxiesChanged { .. }
            )
        })
        .map(|(t, e)| format!("{} {e:?}", (*t - t0()).num_seconds()))
        .collect()
}

#[test]
fn store_full_longer_than_fail_interval_fails_nobody_when_it_clears() {
    let mut w = three_with_master_on_k0("{}");
    let from = w.events.len();
    let writes = w.writes;
    w.store_full = true;
    // Longer than failInterval (20s) and than the proxy's window (15s + 1s).
    w.run_for(90);
    assert_eq!(w.writes, writes);
    // The alarm clears; the sentinel's first write gets through before any keeper or proxy
    // has published again (they would be failed at once if their timers had kept running).
    w.store_full = false;
    set_all_alive(&mut w, false);
    // Shorter than failInterval and the proxy's window, counted from the clear.
    w.run_for(15);
    assert_eq!(judged_since(&w, from), Vec::<String>::new());
    set_all_alive(&mut w, true);
    w.run_for(60);
    assert_eq!(judged_since(&w, from), Vec::<String>::new());
    assert_eq!(w.master_keeper(), "k0");
    assert_eq!(w.cd.proxy.spec.enabled_proxies, vec!["p1"]);
    assert_eq!(
        w.cd.proxy.spec.master_db_uid,
        w.cd.cluster.status.master.clone().unwrap_or_default()
    );
    assert!(w.cd.keepers.values().all(|k| k.status.healthy));
}

#[test]
fn master_dead_while_store_full_is_failed_fail_interval_after_it_clears() {
    let mut w = three_with_master_on_k0("{}");
    w.store_full = true;
    w.run_for(10);
    w.kill("k0");
    w.run_for(30);
    // Its lease expired meanwhile: the info key is gone (a delete, which etcd still applies).
    w.expire("k0");
    w.run_for(30);
    assert_eq!(w.master_keeper(), "k0");
    w.store_full = false;
    let cleared = w.now + secs(1);
    w.run_until(40, |w| w.master_keeper() != "k0");
    let failed = w.when(|e| matches!(e, Event::MasterFailed { .. })).unwrap();
    assert!(
        failed > cleared + secs(20) && failed <= cleared + secs(21),
        "master failed {}s after the store cleared\n{}",
        (failed - cleared).num_seconds(),
        w.events_text()
    );
}

#[test]
fn keeper_failed_before_the_store_filled_stays_failed() {
    let mut w = three_with_master_on_k0("{}");
    w.kill("k2");
    w.run_until(30, |w| !w.cd.keepers[&KeeperUid::from("k2")].status.healthy);
    let from = w.events.len();
    w.store_full = true;
    w.run_for(60);
    w.store_full = false;
    w.run_for(30);
    assert!(!w.cd.keepers[&KeeperUid::from("k2")].status.healthy);
    assert!(
        !w.events[from..]
            .iter()
            .any(|(_, e)| matches!(e, Event::KeeperHealthy { keeper } if keeper == "k2")),
        "{}",
        w.events_text()
    );
    assert_eq!(w.master_keeper(), "k0");
}

#[test]
fn master_timed_out_before_the_sentinel_noticed_the_full_store_is_not_failed_over() {
    let mut w = three_with_master_on_k0(r#"{"failInterval":"10s"}"#);
    w.full_noticed_after = secs(30);
    w.store_full = true;
    // Every keeper times out before the sentinel learns that the store is full: its failover
    // is refused, and from then on the clusterdata (still saying healthy) is what counts.
    w.run_until(20, |w| w.refused_writes > 0);
    assert!(w.saw(|e| matches!(e, Event::MasterFailed { .. })));
    w.run_for(60);
    w.store_full = false;
    for k in ["k0", "k1", "k2"] {
        w.kill(k);
    }
    let from = w.events.len();
    w.run_for(9);
    assert_eq!(judged_since(&w, from), Vec::<String>::new());
    for k in ["k0", "k1", "k2"] {
        w.keeper(k).alive = true;
    }
    w.run_for(30);
    assert_eq!(judged_since(&w, from), Vec::<String>::new());
    assert_eq!(w.master_keeper(), "k0");
}

// The sentinel could not read the store for failInterval or more (etcd lost its leader with a
// crashed host, say): every process stored healthy gets two publication periods from then
// (src/sentinel/health.rs: resume_after_blind_gap), not a whole failInterval as after a reset.

#[test]
fn master_dead_during_a_store_outage_is_failed_a_grace_after_it() {
    // Default spec: sleepInterval 5s, failInterval 20s: keepers publish every 5 s, grace 10 s.
    let mut w = three_with_master_on_k0("{}");
    let from = w.events.len();
    w.kill("k0");
    w.store_down_for(30);
    // The first check after the outage.
    let back = w.now + secs(1);
    w.run_until(30, |w| w.master_keeper() != "k0");
    let failed = w.when(|e| matches!(e, Event::MasterFailed { .. })).unwrap();
    assert!(
        failed > back + secs(10) && failed <= back + secs(11),
        "master failed {}s after the store came back\n{}",
        (failed - back).num_seconds(),
        w.events_text()
    );
    assert!(w.saw(|e| matches!(
        e,
        Event::ObservationResumed {
            grace_ms: 10_000,
            ..
        }
    )));
    assert!(
        !w.events[from..]
            .iter()
            .any(|(_, e)| matches!(e, Event::ObservationStarted)),
        "the memory is kept"
    );
}

#[test]
fn a_live_master_late_to_publish_after_a_store_outage_is_not_failed() {
    let mut w = three_with_master_on_k0("{}");
    let from = w.events.len();
    w.store_down_for(40);
    // The store is back, but the keepers publish only at their next period.
    set_all_alive(&mut w, false);
    w.run_for(9);
    assert_eq!(judged_since(&w, from), Vec::<String>::new());
    set_all_alive(&mut w, true);
    w.run_for(60);
    assert_eq!(judged_since(&w, from), Vec::<String>::new());
    assert_eq!(w.master_keeper(), "k0");
    assert_eq!(
        w.cd.proxy.spec.master_db_uid,
        w.cd.cluster.status.master.clone().unwrap_or_default()
    );
}

#[test]
fn a_standby_is_elected_only_on_a_report_made_after_the_store_outage() {
    let mut w = three_with_master_on_k0("{}");
    w.kill("k0");
    w.kill("k1");
    w.kill("k2");
    w.store_down_for(30);
    // k0 never comes back; the standbys publish again 12 s after the store did, past the
    // master's grace: no standby is elected before it reported again.
    w.run_for(12);
    assert_eq!(w.master_keeper(), "k0");
    w.keeper("k1").alive = true;
    w.keeper("k2").alive = true;
    let back = w.now;
    w.run_until(30, |w| w.master_keeper() != "k0");
    let elected = w
        .when(|e| matches!(e, Event::MasterElected { .. }))
        .unwrap();
    assert!(elected >= back, "{}", w.events_text());
}

#[test]
fn a_new_master_whose_keeper_published_last_before_a_store_stall_is_not_failed_at_once() {
    // Default spec: keepers publish every 5 s, failInterval 20 s, grace 10 s.
    let mut w = three_with_master_on_k0("{}");
    w.kill("k0");
    let killed = w.now;
    // The standbys publish once more, then every publication is held up (etcd electing its
    // own leader, say): the one elected is then judged on an info almost failInterval old.
    w.run_until(10, |w| {
        w.keepers["k1"].last_publish.is_some_and(|t| t > killed)
    });
    w.keeper("k1").alive = false;
    w.keeper("k2").alive = false;
    w.run_until(30, |w| w.master_keeper() != "k0");
    let elected = w.master_keeper();
    let from = w.events.len();
    w.run_for(7);
    assert!(
        !w.events[from..]
            .iter()
            .any(|(_, e)| matches!(e, Event::MasterFailed { .. })),
        "the new master failed right after its election\n{}",
        w.events_text()
    );
    w.keeper("k1").alive = true;
    w.keeper("k2").alive = true;
    w.run_for(30);
    assert_eq!(w.master_keeper(), elected);
    let elections = w
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::MasterElected { .. }))
        .count();
    assert_eq!(elections, 1, "{}", w.events_text());
}
