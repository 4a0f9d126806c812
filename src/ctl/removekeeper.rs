//! `stolonctl removekeeper <uid>`: forget a keeper and its db; it may register again later
//! and then gets a new db.

use super::{CtlError, connect, modify_cluster_data};
use crate::cluster::ClusterData;
use crate::store::StoreConfig;

#[derive(clap::Args, Debug)]
pub struct RemovekeeperArgs {
    /// The keeper uid
    pub keeper_uid: String,
}

/// Removes the keeper and every db assigned to it; refuses while its db is the master.
/// Other dbs' follower lists are left to the sentinel, which recomputes them (as upstream).
pub fn remove_keeper(cd: &mut ClusterData, keeper_uid: &str) -> Result<(), CtlError> {
    if !cd.keepers.contains_key(keeper_uid) {
        return Err(CtlError::NoKeeper(keeper_uid.to_string()));
    }
    if cd.master_keeper_uid() == Some(keeper_uid) {
        return Err(CtlError::KeeperIsMaster);
    }
    cd.keepers.remove(keeper_uid);
    cd.dbs.retain(|_, db| db.spec.keeper_uid != keeper_uid);
    Ok(())
}

pub(super) async fn run(args: RemovekeeperArgs, cfg: &StoreConfig) -> Result<(), CtlError> {
    let store = connect(cfg).await?;
    modify_cluster_data(&store, |cd| remove_keeper(cd, &args.keeper_uid)).await?;
    Ok(())
}
