//! `stolonctl pause` / `resume`: maintenance mode (the spec's `paused`). While paused the
//! sentinel keeps the status current but makes no failover and no change to the standbys
//! (src/sentinel/normal.rs); keepers keep their PostgreSQL running.

use super::{CtlError, connect, modify_cluster_data};
use crate::cluster::ClusterData;
use crate::store::StoreConfig;

pub fn set_paused(cd: &mut ClusterData, paused: bool) -> Result<(), CtlError> {
    if paused
        && let Some(sw) = &cd.cluster.status.switchover
        && sw.in_progress()
    {
        return Err(CtlError::Usage(format!(
            "a switchover is under way ({}): pause once it is over",
            sw.stage
        )));
    }
    // Resumed is the default: no key at all, as a spec that never was paused.
    cd.cluster.spec.paused = paused.then_some(true);
    Ok(())
}

pub(super) async fn run(paused: bool, cfg: &StoreConfig) -> Result<(), CtlError> {
    let store = connect(cfg).await?;
    modify_cluster_data(&store, |cd| set_paused(cd, paused)).await?;
    println!(
        "{}",
        if paused {
            "cluster paused: no failover and no standby changes until `stolonctl resume`"
        } else {
            "cluster resumed: failover and standby management are active again"
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterSpec, zero_time};

    #[test]
    fn pause_sets_the_spec_field_and_resume_removes_it() {
        let mut cd = ClusterData::new("c".into(), ClusterSpec::default(), zero_time());
        set_paused(&mut cd, true).unwrap();
        assert!(cd.cluster.spec.paused());
        set_paused(&mut cd, false).unwrap();
        assert_eq!(cd.cluster.spec.paused, None);
    }
}
