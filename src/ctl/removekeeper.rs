//! `stolonctl removekeeper <uid>`: forget a keeper and its db; it may register again later
//! and then gets a new db.

use super::{CtlError, connect, modify_cluster_data};
use crate::cluster::{ClusterData, KeeperUid};
use crate::store::StoreConfig;

#[derive(clap::Args, Debug)]
pub struct RemovekeeperArgs {
    /// The keeper uid
    pub keeper_uid: KeeperUid,
}

/// Removes the keeper and every db assigned to it; refuses while its db is the master.
/// Other dbs' follower lists are left to the sentinel, which recomputes them (as upstream).
pub fn remove_keeper(cd: &mut ClusterData, keeper_uid: &KeeperUid) -> Result<(), CtlError> {
    if !cd.keepers.contains_key(keeper_uid) {
        return Err(CtlError::NoKeeper(keeper_uid.clone()));
    }
    if cd.master_keeper_uid() == Some(keeper_uid) {
        return Err(CtlError::KeeperIsMaster);
    }
    cd.keepers.remove(keeper_uid);
    cd.dbs.retain(|_, db| db.spec.keeper_uid != *keeper_uid);
    Ok(())
}

pub(super) async fn run(args: RemovekeeperArgs, cfg: &StoreConfig) -> Result<(), CtlError> {
    let store = connect(cfg).await?;
    modify_cluster_data(&store, |cd| remove_keeper(cd, &args.keeper_uid)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterSpec, Db, DbSpec, DbUid, Keeper};

    #[test]
    fn removes_keeper_and_its_db_but_never_the_master() {
        let mut cd = ClusterData::new(
            "c".into(),
            ClusterSpec::default(),
            crate::cluster::zero_time(),
        );
        for (db, keeper) in [("d1", "k1"), ("d2", "k2")] {
            let d = Db {
                uid: db.into(),
                spec: DbSpec {
                    keeper_uid: keeper.into(),
                    ..Default::default()
                },
                ..Default::default()
            };
            cd.dbs.insert(db.into(), d);
            let k = Keeper {
                uid: keeper.into(),
                ..Default::default()
            };
            cd.keepers.insert(keeper.into(), k);
        }
        cd.cluster.status.master = Some("d1".into());
        let untouched = cd.clone();
        assert!(matches!(
            remove_keeper(&mut cd, &"k1".into()),
            Err(CtlError::KeeperIsMaster)
        ));
        assert!(matches!(
            remove_keeper(&mut cd, &"k7".into()),
            Err(CtlError::NoKeeper(_))
        ));
        assert_eq!(cd, untouched);
        remove_keeper(&mut cd, &"k2".into()).unwrap();
        assert!(
            !cd.keepers.contains_key(&KeeperUid::from("k2"))
                && !cd.dbs.contains_key(&DbUid::from("d2"))
        );
        assert!(cd.dbs.contains_key(&DbUid::from("d1")));
    }
}
