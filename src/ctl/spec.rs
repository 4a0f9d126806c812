//! `stolonctl spec [--defaults]`: the stored cluster spec as indented JSON.

use super::{CtlError, connect, read_cluster_data};
use crate::store::StoreConfig;

#[derive(clap::Args, Debug)]
pub struct SpecArgs {
    /// Also show the default values of the fields that are not set
    #[arg(long)]
    pub defaults: bool,
}

pub(super) async fn run(args: SpecArgs, cfg: &StoreConfig) -> Result<(), CtlError> {
    let store = connect(cfg).await?;
    let cd = read_cluster_data(&store).await?.value;
    let spec = if args.defaults {
        cd.cluster.spec.with_defaults()
    } else {
        cd.cluster.spec
    };
    let text = serde_json::to_string_pretty(&spec)
        .map_err(|e| CtlError::Io(format!("cannot encode the spec: {e}")))?;
    println!("{text}");
    Ok(())
}
