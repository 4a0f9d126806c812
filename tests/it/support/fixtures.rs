//! Small store documents for tests that talk to the store directly.

use stolon::cluster::{ClusterData, ClusterInitMode, ClusterSpec, KeeperInfo, new_uid};

/// A brand new cluster (initMode new), as `stolonctl init` writes it.
pub(crate) fn new_cluster_data() -> ClusterData {
    let spec = ClusterSpec {
        init_mode: Some(ClusterInitMode::New),
        ..Default::default()
    };
    ClusterData::new(new_uid(), spec, chrono::Utc::now())
}

/// A keeper info as a keeper of cluster `c1` publishes it.
pub(crate) fn keeper_info(uid: &str) -> KeeperInfo {
    KeeperInfo {
        info_uid: new_uid(),
        uid: uid.into(),
        cluster_uid: "c1".into(),
        boot_uuid: new_uid(),
        ..Default::default()
    }
}
