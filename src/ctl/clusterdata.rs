//! `stolonctl clusterdata read [--pretty]` and `clusterdata write [-f file|-] [-y]`: dump and
//! restore the whole document (backups, moving a cluster to another store).

use super::{CtlError, connect, read_input};
use crate::cluster::ClusterData;
use crate::store::{CasOutcome, StoreConfig};

#[derive(clap::Args, Debug)]
pub struct ClusterdataArgs {
    #[command(subcommand)]
    pub command: ClusterdataCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ClusterdataCommand {
    /// Print the cluster data JSON
    Read {
        /// Indent the JSON
        #[arg(long)]
        pretty: bool,
    },
    /// Write cluster data JSON (from a file or stdin) into the store
    Write {
        /// File containing the cluster data ("-" or absent: stdin)
        #[arg(short = 'f', long = "file")]
        file: Option<String>,
        /// Overwrite existing cluster data
        #[arg(short = 'y', long = "yes")]
        yes: bool,
    },
}

pub(super) async fn run(args: ClusterdataArgs, cfg: &StoreConfig) -> Result<(), CtlError> {
    match args.command {
        ClusterdataCommand::Read { pretty } => read(pretty, cfg).await,
        ClusterdataCommand::Write { file, yes } => {
            write(file.as_deref().unwrap_or("-"), yes, cfg).await
        }
    }
}

/// Prints the stored bytes unchanged (without --pretty), so a backup keeps fields this
/// version does not know.
async fn read(pretty: bool, cfg: &StoreConfig) -> Result<(), CtlError> {
    let store = connect(cfg).await?;
    let raw = store
        .get_cluster_data_raw()
        .await?
        .ok_or_else(|| CtlError::NoClusterData(store.cluster_path().to_string()))?;
    if pretty {
        let value: serde_json::Value = serde_json::from_slice(&raw.value)
            .map_err(|e| CtlError::Io(format!("stored cluster data is not JSON: {e}")))?;
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| CtlError::Io(format!("cannot encode cluster data: {e}")))?;
        println!("{text}");
    } else {
        println!("{}", String::from_utf8_lossy(&raw.value));
    }
    Ok(())
}

async fn write(file: &str, yes: bool, cfg: &StoreConfig) -> Result<(), CtlError> {
    let text = read_input(file)?;
    // Same checks as every component applies on read: a document they would refuse is not
    // written. What is written is the bytes given, so fields this version does not know stay.
    ClusterData::from_json(text.as_bytes())?;
    let store = connect(cfg).await?;
    if yes {
        store.put_cluster_data_raw(text.into_bytes()).await?;
    } else if store.cas_cluster_data_raw(text.into_bytes(), 0).await? == CasOutcome::Conflict {
        // Create-only: an existing document is never replaced without --yes, even one written
        // between a check and the write.
        return Err(CtlError::ClusterDataExists(
            store.cluster_path().to_string(),
        ));
    }
    println!("successfully wrote cluster data into the new store");
    Ok(())
}
