//! stolonctl: one file per sub-command. Each sub-command parses and checks
//! its input before it connects, so bad input never reaches the store; the decisions
//! (patching a spec, failing or removing a keeper, building the status) are plain functions
//! over the cluster data, tested without a store.

mod clusterdata;
mod failkeeper;
mod init;
mod pause;
mod pgparams;
mod promote;
mod removekeeper;
mod spec;
mod status;
mod switchover;
mod update;

pub use clusterdata::{ClusterdataArgs, ClusterdataCommand};
pub use failkeeper::{FailkeeperArgs, fail_keeper};
pub use init::{InitArgs, init_spec};
pub use pause::set_paused;
pub use promote::{PromoteArgs, promote};
pub use removekeeper::{RemovekeeperArgs, remove_keeper};
pub use spec::SpecArgs;
pub use status::{Status, StatusArgs, StatusFormat, build_status, render_text};
pub use switchover::{SwitchoverArgs, request_switchover};
pub use update::{UpdateArgs, updated_spec};

use crate::cluster::{ClusterData, ClusterDataError, KeeperUid, SpecError};
use crate::config::{ConfigError, CtlRole, Flags, Loaded};
use crate::store::{CasOutcome, Store, StoreConfig, StoreError, Versioned};
use std::io::{BufRead, Read, Write};

/// Upstream's `maxRetries` for compare-and-swap writes.
pub const MAX_CAS_RETRIES: usize = 3;

#[derive(clap::Parser, Debug)]
#[command(
    name = "stolonctl",
    version,
    about = "stolon command line client",
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(flatten)]
    pub flags: Flags<CtlRole>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Initialize a new cluster
    Init(InitArgs),
    /// Display the current cluster status
    Status(StatusArgs),
    /// Retrieve the current cluster specification
    Spec(SpecArgs),
    /// Update a cluster specification
    Update(UpdateArgs),
    /// Force a keeper as "temporarily" failed (the sentinel fails over if it is the master)
    Failkeeper(FailkeeperArgs),
    /// Remove a keeper from the cluster data
    Removekeeper(RemovekeeperArgs),
    /// Promote a standby cluster to a primary cluster
    Promote(PromoteArgs),
    /// Move the master to a standby with no write lost (a planned switchover)
    Switchover(SwitchoverArgs),
    /// Maintenance mode: no failover and no standby changes until `resume`
    Pause,
    /// Leave maintenance mode
    Resume,
    /// Manage the current cluster data
    Clusterdata(ClusterdataArgs),
    /// Display the version
    Version,
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Usage(String),
    #[error("invalid cluster spec: {0}")]
    Spec(#[from] SpecError),
    #[error("invalid cluster data: {0}")]
    ClusterData(#[from] ClusterDataError),
    #[error("no cluster data in the store at {0}/clusterdata (run `stolonctl init` first)")]
    NoClusterData(String),
    #[error("keeper {0:?} does not exist")]
    NoKeeper(KeeperUid),
    #[error("keeper assigned db is the current cluster master db.")]
    KeeperIsMaster,
    #[error("cluster data at {0} already exists; use --yes to overwrite it")]
    ClusterDataExists(String),
    #[error("cluster data was changed concurrently {0} times in a row; try again")]
    TooManyConflicts(usize),
    #[error("{0}")]
    Io(String),
    #[error("switchover rolled back: {0}; the master is unchanged")]
    SwitchoverRolledBack(String),
}

/// Parses nothing itself: the binary hands over the parsed command line.
pub async fn run(cli: Cli) -> Result<(), CtlError> {
    let Some(command) = cli.command else {
        use clap::CommandFactory;
        // As upstream: the bare command prints its help.
        let _ = Cli::command().print_help();
        return Ok(());
    };
    if let Command::Version = command {
        println!("stolonctl version v{}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let loaded = Loaded::load(&cli.flags)?;
    let log = loaded.log_settings()?;
    let store_cfg = StoreConfig::from_loaded(&loaded)?;
    crate::telemetry::init(&log);
    match command {
        Command::Init(a) => init::run(a, &store_cfg).await,
        Command::Status(a) => status::run(a, &store_cfg).await,
        Command::Spec(a) => spec::run(a, &store_cfg).await,
        Command::Update(a) => update::run(a, &store_cfg).await,
        Command::Failkeeper(a) => failkeeper::run(a, &store_cfg).await,
        Command::Removekeeper(a) => removekeeper::run(a, &store_cfg).await,
        Command::Promote(a) => promote::run(a, &store_cfg).await,
        Command::Switchover(a) => switchover::run(a, &store_cfg).await,
        Command::Pause => pause::run(true, &store_cfg).await,
        Command::Resume => pause::run(false, &store_cfg).await,
        Command::Clusterdata(a) => clusterdata::run(a, &store_cfg).await,
        Command::Version => Ok(()),
    }
}

async fn connect(cfg: &StoreConfig) -> Result<Store, CtlError> {
    Ok(Store::connect(cfg).await?)
}

/// The stored clusterdata, which must exist and be valid.
async fn read_cluster_data(store: &Store) -> Result<Versioned<ClusterData>, CtlError> {
    store
        .get_cluster_data()
        .await?
        .ok_or_else(|| CtlError::NoClusterData(store.cluster_path().to_string()))
}

/// Read-modify-write with compare-and-swap, retried on conflict as upstream does. Only what
/// `change` changed is changed in the stored document: fields this version does not know (a
/// newer stolon's) stay as they are.
async fn modify_cluster_data(
    store: &Store,
    mut change: impl FnMut(&mut ClusterData) -> Result<(), CtlError>,
) -> Result<ClusterData, CtlError> {
    for _ in 0..MAX_CAS_RETRIES {
        let raw = store
            .get_cluster_data_raw()
            .await?
            .ok_or_else(|| CtlError::NoClusterData(store.cluster_path().to_string()))?;
        let before = ClusterData::from_json(&raw.value)?;
        let mut cd = before.clone();
        change(&mut cd)?;
        let bytes = apply_changes(&raw.value, &before, &cd);
        match store.cas_cluster_data_raw(bytes, raw.mod_revision).await? {
            CasOutcome::Written { .. } => return Ok(cd),
            CasOutcome::Conflict => continue,
        }
    }
    Err(CtlError::TooManyConflicts(MAX_CAS_RETRIES))
}

/// `stored` with the changes from `before` to `after` applied (a JSON patch of the two), so
/// that what neither knows is kept; `after` as this version writes it if the stored document
/// does not take the patch.
fn apply_changes(stored: &[u8], before: &ClusterData, after: &ClusterData) -> Vec<u8> {
    let patched = (|| {
        let mut doc: serde_json::Value = serde_json::from_slice(stored).ok()?;
        let changes = json_patch::diff(
            &serde_json::to_value(before).ok()?,
            &serde_json::to_value(after).ok()?,
        );
        json_patch::patch(&mut doc, &changes).ok()?;
        let bytes = serde_json::to_vec(&doc).ok()?;
        // Only a document every component reads back as `after` is written.
        (ClusterData::from_json(&bytes).ok()? == *after).then_some(bytes)
    })();
    patched.unwrap_or_else(|| after.to_json())
}

/// The text of `-f <file>` (`-` is stdin).
fn read_input(file: &str) -> Result<String, CtlError> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CtlError::Io(format!("cannot read from stdin: {e}")))?;
        Ok(s)
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CtlError::Io(format!("cannot read file {file}: {e}")))
    }
}

/// Asks until the answer is exactly `yes` or `no`, as upstream.
fn confirm(question: &str) -> Result<bool, CtlError> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    loop {
        print!("{question}");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let n = lines
            .read_line(&mut line)
            .map_err(|e| CtlError::Io(format!("error reading input: {e}")))?;
        if n == 0 {
            return Err(CtlError::Io(
                "error reading input: end of input (use --yes to skip the confirmation)".into(),
            ));
        }
        match line.trim_end_matches(['\n', '\r']) {
            "yes" => return Ok(true),
            "no" => return Ok(false),
            _ => println!("Please enter 'yes' or 'no'"),
        }
    }
}

#[cfg(test)]
mod modify_tests {
    use super::*;

    #[test]
    fn a_change_keeps_the_fields_this_version_does_not_know() {
        let stored = r#"{"formatVersion":1,"changeTime":"2024-01-01T00:00:00Z","fromANewerVersion":{"x":1},
            "cluster":{"uid":"c0ffee00","generation":1,"changeTime":"2024-01-01T00:00:00Z",
              "spec":{"initMode":"new","sleepInterval":"2s","newSpecField":true},
              "status":{"currentGeneration":1,"phase":"normal"}},
            "keepers":{},"dbs":{},"proxy":{"generation":1,"changeTime":"2024-01-01T00:00:00Z","spec":{},"status":{}}}"#;
        let before = ClusterData::from_json(stored.as_bytes()).unwrap();
        let mut after = before.clone();
        after.cluster.spec.sleep_interval = Some(crate::cluster::GoDuration::from_secs(3));
        let written = apply_changes(stored.as_bytes(), &before, &after);
        let doc: serde_json::Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(doc["fromANewerVersion"]["x"], 1);
        assert_eq!(doc["cluster"]["spec"]["newSpecField"], true);
        assert_eq!(doc["cluster"]["spec"]["sleepInterval"], "3s");
        assert_eq!(ClusterData::from_json(&written).unwrap(), after);
    }
}
