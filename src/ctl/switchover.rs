//! `stolonctl switchover [--to KEEPER] [--timeout D] [-y]`: a planned change of master with
//! nothing lost, driven by the sentinel (src/sentinel/switchover.rs). This writes the request
//! after checking the target, then follows the stages until the new master serves through the
//! proxies or the switchover is rolled back.

use super::{CtlError, confirm, connect, modify_cluster_data, read_cluster_data};
use crate::cluster::{
    ClusterData, ClusterPhase, ClusterRole, Db, GoDuration, KeeperUid, Switchover, SwitchoverStage,
    Time,
};
use crate::store::{Store, StoreConfig};
use std::cmp::Reverse;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct SwitchoverArgs {
    /// The keeper to promote (default: the best eligible standby: highest priority, then most
    /// advanced)
    #[arg(long = "to", value_name = "KEEPER")]
    pub to: Option<KeeperUid>,
    /// Roll back to the current master unless the target is promoted within this time
    #[arg(long, default_value = "30s", value_parser = parse_timeout)]
    pub timeout: GoDuration,
    /// Don't ask for confirmation
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
}

fn parse_timeout(s: &str) -> Result<GoDuration, String> {
    match GoDuration::parse(s) {
        Ok(d) if d.to_std() > Duration::ZERO => Ok(d),
        Ok(_) => Err("must be more than 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// How often the stages are polled while following the switchover.
const FOLLOW_EVERY: Duration = Duration::from_millis(50);
/// How long past its timeout the switchover is followed before giving up on the sentinel.
const SENTINEL_MARGIN: Duration = Duration::from_secs(30);

/// Writes the switchover request into `cd` after checking it can be done; returns the
/// target's db.
pub fn request_switchover(
    cd: &mut ClusterData,
    to: Option<&KeeperUid>,
    timeout: GoDuration,
    now: Time,
) -> Result<Db, CtlError> {
    let refuse = |why: String| Err(CtlError::Usage(format!("cannot switch over: {why}")));
    if cd.cluster.status.phase != ClusterPhase::Normal {
        return refuse("the cluster is still initializing".into());
    }
    if cd.cluster.spec.role() == ClusterRole::Standby {
        return refuse("a standby cluster's head follows an external primary".into());
    }
    if cd.cluster.spec.paused() {
        return refuse("the cluster is paused (stolonctl resume)".into());
    }
    if let Some(sw) = &cd.cluster.status.switchover
        && sw.in_progress()
    {
        return refuse(format!("a switchover is already under way ({})", sw.stage));
    }
    let Some(master) = cd.master_db().cloned() else {
        return refuse("the cluster has no master".into());
    };
    let target = match to {
        Some(keeper) => {
            if !cd.keepers.contains_key(keeper) {
                return Err(CtlError::NoKeeper(keeper.clone()));
            }
            let Some(db) = cd.db_of_keeper(keeper) else {
                return refuse(format!("keeper {keeper} has no db"));
            };
            if db.uid == master.uid {
                return refuse(format!("keeper {keeper} is already the master"));
            }
            if let Err(why) = eligible(cd, &master, db) {
                return refuse(format!("keeper {keeper}: {why}"));
            }
            db.clone()
        }
        None => {
            let mut candidates: Vec<&Db> = cd
                .dbs
                .values()
                .filter(|db| db.uid != master.uid && eligible(cd, &master, db).is_ok())
                .filter(|db| priority(cd, db) > 0)
                .collect();
            candidates.sort_by_key(|db| {
                (
                    Reverse(priority(cd, db)),
                    Reverse(db.status.x_log_pos),
                    db.uid.clone(),
                )
            });
            match candidates.first() {
                Some(db) => (*db).clone(),
                None => {
                    let reasons: Vec<String> = cd
                        .dbs
                        .values()
                        .filter(|db| db.uid != master.uid)
                        .map(|db| match eligible(cd, &master, db) {
                            Err(why) => format!("{}: {why}", db.spec.keeper_uid),
                            Ok(()) => {
                                format!("{}: priority 0 (name it with --to)", db.spec.keeper_uid)
                            }
                        })
                        .collect();
                    return refuse(format!(
                        "no eligible standby ({})",
                        if reasons.is_empty() {
                            "there is none".into()
                        } else {
                            reasons.join("; ")
                        }
                    ));
                }
            }
        }
    };
    cd.cluster.status.switchover = Some(Switchover {
        from_db: master.uid.clone(),
        to_db: target.uid.clone(),
        requested_at: now,
        timeout,
        stage: SwitchoverStage::Requested,
        stage_since: now,
        stop_x_log_pos: None,
        reason: String::new(),
    });
    Ok(target)
}

fn priority(cd: &ClusterData, db: &Db) -> i64 {
    cd.keepers
        .get(&db.spec.keeper_uid)
        .map_or(1, |k| k.status.priority())
}

/// Whether `db` may become the master in a switchover: a healthy, converged standby of the
/// master within maxStandbyLag whose keeper may be master.
fn eligible(cd: &ClusterData, master: &Db, db: &Db) -> Result<(), String> {
    if !db.is_standby_of(&master.uid) {
        return Err("not a standby of the master".into());
    }
    let Some(keeper) = cd.keepers.get(&db.spec.keeper_uid) else {
        return Err("its keeper is not in the cluster data".into());
    };
    if !keeper.status.healthy {
        return Err("its keeper is unhealthy".into());
    }
    if keeper.status.can_be_master == Some(false) {
        return Err("started with --can-be-master=false".into());
    }
    if !db.status.healthy {
        return Err("its PostgreSQL is unhealthy".into());
    }
    if db.status.current_generation != db.generation {
        return Err("still converging (being created or reconfigured)".into());
    }
    let lag = master.status.x_log_pos.saturating_sub(db.status.x_log_pos);
    let max = u64::from(cd.cluster.spec.max_standby_lag());
    if lag > max {
        return Err(format!(
            "{lag} bytes behind the master, more than maxStandbyLag ({max})"
        ));
    }
    Ok(())
}

pub(super) async fn run(args: SwitchoverArgs, cfg: &StoreConfig) -> Result<(), CtlError> {
    let store = connect(cfg).await?;
    // Checked before asking, so a refusal comes at once.
    let mut preview = read_cluster_data(&store).await?.value;
    let target = request_switchover(
        &mut preview,
        args.to.as_ref(),
        args.timeout,
        chrono::Utc::now(),
    )?;
    if !args.yes
        && !confirm(&format!(
            "The master will move to keeper {} (db {}). Are you sure you want to continue? [yes/no] ",
            target.spec.keeper_uid, target.uid
        ))?
    {
        return Ok(());
    }
    let started = tokio::time::Instant::now();
    let cd = modify_cluster_data(&store, |cd| {
        request_switchover(cd, args.to.as_ref(), args.timeout, chrono::Utc::now()).map(|_| ())
    })
    .await?;
    let Some(requested) = cd.cluster.status.switchover else {
        return Err(CtlError::Usage(
            "the switchover request was not written".into(),
        ));
    };
    println!(
        "switchover requested: master db {} -> db {} (keeper {}), timeout {}",
        requested.from_db, requested.to_db, target.spec.keeper_uid, requested.timeout
    );
    follow(&store, &requested, started).await
}

/// Prints each stage as it begins, with how long the previous one took, until the end.
async fn follow(
    store: &Store,
    requested: &Switchover,
    started: tokio::time::Instant,
) -> Result<(), CtlError> {
    let give_up = started + requested.timeout.to_std() + SENTINEL_MARGIN;
    let mut stage = SwitchoverStage::Requested;
    let mut stage_began = started;
    loop {
        let cd = read_cluster_data(store).await?.value;
        let sw = cd
            .cluster
            .status
            .switchover
            .filter(|s| s.requested_at == requested.requested_at && s.to_db == requested.to_db);
        let Some(sw) = sw else {
            return Err(CtlError::Usage(
                "the switchover request was replaced by another one".into(),
            ));
        };
        if sw.stage != stage {
            let now = tokio::time::Instant::now();
            // Display ignores the width: padded as a string.
            let name = stage.to_string();
            println!("  {name:<26} {:>6.2}s", (now - stage_began).as_secs_f64());
            stage = sw.stage;
            stage_began = now;
        }
        match sw.stage {
            SwitchoverStage::Done => {
                println!(
                    "switchover done in {:.2}s: master is db {} on keeper {}",
                    started.elapsed().as_secs_f64(),
                    sw.to_db,
                    cd.dbs
                        .get(&sw.to_db)
                        .map(|d| d.spec.keeper_uid.to_string())
                        .unwrap_or_default()
                );
                return Ok(());
            }
            SwitchoverStage::RolledBack => {
                return Err(CtlError::SwitchoverRolledBack(sw.reason));
            }
            _ => {}
        }
        if tokio::time::Instant::now() > give_up {
            return Err(CtlError::Usage(format!(
                "no sentinel moved the switchover on within its timeout (stage: {}); is a sentinel running? It is rolled back when one acts on it",
                sw.stage
            )));
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterSpec, DbRole, FollowConfig, Generation, Keeper, zero_time};

    /// Master db "m" on k0; standbys "s1" on k1 and "s2" on k2, healthy and converged.
    fn cd() -> ClusterData {
        let mut cd = ClusterData::new("c".into(), ClusterSpec::default(), zero_time());
        cd.cluster.status.phase = ClusterPhase::Normal;
        cd.cluster.status.master = Some("m".into());
        for (db, keeper, role) in [
            ("m", "k0", DbRole::Master),
            ("s1", "k1", DbRole::Standby),
            ("s2", "k2", DbRole::Standby),
        ] {
            let mut k = Keeper {
                uid: keeper.into(),
                ..Default::default()
            };
            k.status.healthy = true;
            cd.keepers.insert(keeper.into(), k);
            let mut d = Db {
                uid: db.into(),
                generation: Generation::new(2),
                ..Default::default()
            };
            d.spec.keeper_uid = keeper.into();
            d.spec.role = role;
            if role == DbRole::Standby {
                d.spec.follow_config = Some(FollowConfig::internal(&"m".into()));
            }
            d.status.healthy = true;
            d.status.current_generation = Generation::new(2);
            d.status.x_log_pos = 1000;
            cd.dbs.insert(db.into(), d);
        }
        cd
    }

    fn ask(cd: &mut ClusterData, to: Option<&str>) -> Result<Db, CtlError> {
        request_switchover(
            cd,
            to.map(KeeperUid::from).as_ref(),
            GoDuration::from_secs(30),
            zero_time(),
        )
    }

    #[test]
    fn default_target_is_the_highest_priority_then_the_most_advanced() {
        let mut c = cd();
        c.dbs.get_mut(&"s1".into()).unwrap().status.x_log_pos = 1100;
        assert_eq!(ask(&mut c.clone(), None).unwrap().uid.as_str(), "s1");
        c.keepers.get_mut(&"k2".into()).unwrap().status.priority = Some(5);
        assert_eq!(ask(&mut c.clone(), None).unwrap().uid.as_str(), "s2");
        let sw = {
            ask(&mut c, None).unwrap();
            c.cluster.status.switchover.clone().unwrap()
        };
        assert_eq!(sw.stage, SwitchoverStage::Requested);
        assert_eq!(sw.from_db.as_str(), "m");
    }

    #[test]
    fn refusals_name_the_reason() {
        let err = |c: &mut ClusterData, to: Option<&str>| ask(c, to).unwrap_err().to_string();
        let mut c = cd();
        c.dbs.get_mut(&"m".into()).unwrap().status.x_log_pos = 100 << 20;
        assert!(err(&mut c, Some("k1")).contains("maxStandbyLag"));
        let mut c = cd();
        c.keepers.get_mut(&"k1".into()).unwrap().status.healthy = false;
        assert!(err(&mut c, Some("k1")).contains("keeper is unhealthy"));
        assert!(err(&mut cd(), Some("k0")).contains("already the master"));
        assert!(err(&mut cd(), Some("nope")).contains("does not exist"));
        let mut c = cd();
        c.cluster.spec.paused = Some(true);
        assert!(err(&mut c, None).contains("paused"));
        let mut c = cd();
        ask(&mut c, None).unwrap();
        assert!(err(&mut c, None).contains("already under way"));
        // Priority 0 is a target only when named.
        let mut c = cd();
        for k in ["k1", "k2"] {
            c.keepers.get_mut(&k.into()).unwrap().status.priority = Some(0);
        }
        assert!(err(&mut c.clone(), None).contains("priority 0"));
        assert_eq!(ask(&mut c, Some("k2")).unwrap().uid.as_str(), "s2");
    }
}
