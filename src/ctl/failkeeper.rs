//! `stolonctl failkeeper <uid>`: mark a keeper as failed; the sentinel treats it as unhealthy
//! for one check (and fails over if it held the master).

use super::{CtlError, connect, modify_cluster_data};
use crate::cluster::{ClusterData, KeeperUid};
use crate::store::StoreConfig;

#[derive(clap::Args, Debug)]
pub struct FailkeeperArgs {
    /// The keeper uid
    pub keeper_uid: KeeperUid,
}

pub fn fail_keeper(cd: &mut ClusterData, keeper_uid: &KeeperUid) -> Result<(), CtlError> {
    let keeper = cd
        .keepers
        .get_mut(keeper_uid)
        .ok_or_else(|| CtlError::NoKeeper(keeper_uid.clone()))?;
    keeper.status.force_fail = true;
    Ok(())
}

pub(super) async fn run(args: FailkeeperArgs, cfg: &StoreConfig) -> Result<(), CtlError> {
    let store = connect(cfg).await?;
    modify_cluster_data(&store, |cd| fail_keeper(cd, &args.keeper_uid)).await?;
    Ok(())
}
