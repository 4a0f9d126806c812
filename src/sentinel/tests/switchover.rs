//! Named scenarios for the planned switchover (src/sentinel/switchover.rs), maintenance mode
//! and election priority.

use super::world::*;
use crate::cluster::*;
use crate::sentinel::Event;

/// Three keepers and a proxy, initialized; returns (old master keeper, target keeper).
fn cluster() -> (World, KeeperUid, String) {
    let w = World::new("{}")
        .with_keepers(&["k0", "k1", "k2"])
        .with_proxies(&["p0"])
        .initialized();
    let master = w.master_keeper();
    let target = ["k0", "k1", "k2"]
        .into_iter()
        .find(|k| *k != master.as_str())
        .unwrap()
        .to_string();
    (w, master, target)
}

#[test]
fn switchover_promotes_the_target_only_after_it_received_the_old_masters_last_wal() {
    let (mut w, old, target) = cluster();
    let old_db = w.db_uid_of(&old);
    let target_db = w.db_uid_of(&target);
    // The old master stops at 5000; the target has received up to it only.
    w.keeper(&old).x_log_pos = 5000;
    w.keeper(&target).x_log_pos = 5000;
    w.request_switchover(&target, 60);
    w.run_until(10, |w| {
        w.switchover_stage() == Some(SwitchoverStage::CatchingUp)
    });
    assert!(w.cd.proxy.spec.master_db_uid.is_empty(), "proxies drained");
    assert!(w.cd.dbs[&old_db].spec.switchover_stop);
    assert_eq!(
        w.cd.cluster
            .status
            .switchover
            .as_ref()
            .unwrap()
            .stop_x_log_pos,
        Some(5000)
    );
    // The stopped master is not a failure: no failover while the target catches up.
    w.run_for(30);
    assert_eq!(w.master_keeper(), old);
    assert!(!w.saw(|e| matches!(e, Event::MasterFailed { .. })));

    w.keeper(&target).x_log_pos = 5100;
    w.run_until(5, |w| w.master_keeper().as_str() == target);
    let old_spec = &w.cd.dbs[&old_db].spec;
    assert_eq!(
        old_spec.role,
        DbRole::Standby,
        "the old master follows as it is"
    );
    assert_eq!(old_spec.follow_config.as_ref().unwrap().db_uid, target_db);
    assert!(!old_spec.switchover_stop);
    w.run_until(10, |w| w.switchover_stage() == Some(SwitchoverStage::Done));
    assert_eq!(w.cd.proxy.spec.master_db_uid, target_db);
    assert!(
        w.cd.dbs.contains_key(&old_db),
        "not removed: it rejoins with its data"
    );
}

#[test]
fn switchover_not_done_within_its_timeout_is_rolled_back_to_the_old_master() {
    let (mut w, old, target) = cluster();
    let old_db = w.db_uid_of(&old);
    w.keeper(&old).x_log_pos = 5000;
    w.keeper(&target).x_log_pos = 4000;
    w.request_switchover(&target, 20);
    w.run_until(30, |w| {
        w.switchover_stage() == Some(SwitchoverStage::RolledBack)
    });
    let sw = w.cd.cluster.status.switchover.clone().unwrap();
    assert!(sw.reason.contains("timeout"), "{}", sw.reason);
    assert_eq!(w.master_keeper(), old);
    assert!(!w.cd.dbs[&old_db].spec.switchover_stop);
    // Served again once it runs, and never failed over meanwhile.
    w.run_until(10, |w| w.cd.proxy.spec.master_db_uid == old_db);
    w.run_for(60);
    assert_eq!(w.master_keeper(), old);
    assert!(!w.saw(|e| matches!(e, Event::MasterElected { .. })));
}

#[test]
fn switchover_rolls_back_when_its_target_dies_before_the_promotion() {
    let (mut w, old, target) = cluster();
    w.keeper(&old).x_log_pos = 5000;
    w.keeper(&target).x_log_pos = 4000;
    w.request_switchover(&target, 120);
    w.run_until(10, |w| {
        w.switchover_stage() == Some(SwitchoverStage::CatchingUp)
    });
    w.kill(&target);
    w.run_until(40, |w| {
        w.switchover_stage() == Some(SwitchoverStage::RolledBack)
    });
    let sw = w.cd.cluster.status.switchover.clone().unwrap();
    assert!(sw.reason.contains("unhealthy"), "{}", sw.reason);
    assert_eq!(w.master_keeper(), old);
}

#[test]
fn switchover_requested_while_paused_is_refused() {
    let (mut w, old, target) = cluster();
    w.cd.cluster.spec.paused = Some(true);
    w.request_switchover(&target, 60);
    w.run_until(3, |w| {
        w.switchover_stage() == Some(SwitchoverStage::RolledBack)
    });
    assert_eq!(w.master_keeper(), old);
    assert!(!w.cd.proxy.spec.master_db_uid.is_empty());
}

#[test]
fn paused_cluster_keeps_its_failed_master_until_resumed() {
    let (mut w, old, _) = cluster();
    w.cd.cluster.spec.paused = Some(true);
    w.kill(&old);
    w.run_for(120);
    assert_eq!(w.master_keeper(), old);
    assert!(w.saw(|e| matches!(e, Event::FailoverPaused { .. })));
    assert!(
        w.cd.keepers.contains_key(&old),
        "nothing removed while paused"
    );
    w.cd.cluster.spec.paused = None;
    w.run_until(10, |w| w.master_keeper() != old);
}

#[test]
fn failover_prefers_the_higher_priority_among_eligible_standbys() {
    let mut w = World::new("{}").with_keepers(&["k0", "k1", "k2"]);
    w.keeper("k0").priority = Some(3);
    let mut w = w.initialized();
    // Priority 3 is the initial master; k2 is preferred over the more advanced k1.
    assert_eq!(w.master_keeper().as_str(), "k0");
    w.keeper("k1").priority = Some(1);
    w.keeper("k1").x_log_pos = 1100;
    w.keeper("k2").priority = Some(2);
    w.run_for(3);
    w.kill("k0");
    w.run_until(40, |w| w.master_keeper().as_str() != "k0");
    assert_eq!(w.master_keeper().as_str(), "k2");
}

#[test]
fn priority_zero_is_never_elected_automatically() {
    let mut w = World::new("{}").with_keepers(&["k0", "k1"]);
    w.keeper("k1").priority = Some(0);
    let mut w = w.initialized();
    assert_eq!(
        w.master_keeper().as_str(),
        "k0",
        "priority 0 is not the initial master"
    );
    w.kill("k0");
    w.run_for(60);
    assert_eq!(w.master_keeper().as_str(), "k0");
    assert!(w.saw(|e| matches!(e, Event::NoEligibleMaster { .. })));
}

#[test]
fn priority_zero_is_still_a_switchover_target() {
    let mut w = World::new("{}").with_keepers(&["k0", "k1"]);
    w.keeper("k1").priority = Some(0);
    let mut w = w.initialized();
    w.request_switchover("k1", 60);
    // It receives the old master's shutdown checkpoint.
    w.keeper("k1").x_log_pos = 1100;
    w.run_until(20, |w| w.master_keeper().as_str() == "k1");
}
