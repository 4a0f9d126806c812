//! `stolonctl promote`: turns a standby cluster into a primary one (upstream's spec change:
//! `role` becomes master). The sentinel then makes the head of the cluster, which followed the
//! external primary, a master: it stops following and is promoted, and its standbys follow it.

use super::{CtlError, confirm, connect, modify_cluster_data};
use crate::cluster::{ClusterData, ClusterRole};
use crate::store::StoreConfig;

#[derive(clap::Args, Debug)]
pub struct PromoteArgs {
    /// Don't ask for confirmation
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
}

/// The spec change; refused unless the cluster is a standby cluster.
pub fn promote(cd: &mut ClusterData) -> Result<(), CtlError> {
    if cd.cluster.spec.role() != ClusterRole::Standby {
        return Err(CtlError::Usage(
            "the cluster is not a standby cluster: nothing to promote".into(),
        ));
    }
    cd.cluster.spec.role = Some(ClusterRole::Master);
    Ok(())
}

pub(super) async fn run(args: PromoteArgs, cfg: &StoreConfig) -> Result<(), CtlError> {
    if !args.yes
        && !confirm(
            "The standby cluster will stop following its primary and take writes. Are you sure you want to continue? [yes/no] ",
        )?
    {
        return Ok(());
    }
    let store = connect(cfg).await?;
    modify_cluster_data(&store, promote).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterSpec;

    fn cd(spec: &str) -> ClusterData {
        ClusterData::new(
            "c".into(),
            ClusterSpec::from_json(spec).unwrap(),
            crate::cluster::zero_time(),
        )
    }

    #[test]
    fn a_standby_cluster_becomes_a_primary_one() {
        let mut c = cd(
            r#"{"initMode":"pitr","role":"standby","pitrConfig":{"dataRestoreCommand":"x %d"}}"#,
        );
        promote(&mut c).unwrap();
        assert_eq!(c.cluster.spec.role(), ClusterRole::Master);
    }

    #[test]
    fn a_primary_cluster_is_refused() {
        let mut c = cd(r#"{"initMode":"new"}"#);
        let err = promote(&mut c).unwrap_err().to_string();
        assert!(err.contains("not a standby cluster"), "{err}");
    }
}
