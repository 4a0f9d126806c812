//! `stolonctl init [spec-json] [-f file|-] [-y]`: a brand new cluster.

use super::{CtlError, confirm, connect, read_input};
use crate::cluster::{ClusterData, ClusterSpec, new_uid};
use crate::store::StoreConfig;

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// The cluster spec as JSON (default {"initMode":"new"})
    pub spec: Option<String>,
    /// File containing the cluster spec ("-" for stdin)
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
    /// Don't ask for confirmation
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
}

/// The spec to initialise with, validated. An absent spec means `{"initMode":"new"}`.
pub fn init_spec(text: Option<&str>) -> Result<ClusterSpec, CtlError> {
    let text = match text {
        Some(t) if !t.trim().is_empty() => t,
        _ => r#"{"initMode":"new"}"#,
    };
    let spec = crate::cluster::parse_spec_input(text)?;
    spec.check_input()?;
    Ok(spec)
}

pub(super) async fn run(args: InitArgs, cfg: &StoreConfig) -> Result<(), CtlError> {
    let text = match (&args.spec, &args.file) {
        (Some(_), Some(_)) => {
            return Err(CtlError::Usage(
                "give the cluster spec either as argument or with --file, not both".into(),
            ));
        }
        (Some(s), None) => Some(s.clone()),
        (None, Some(f)) => Some(read_input(f)?),
        (None, None) => None,
    };
    // Checked before connecting: a bad spec must not cost the user their cluster data.
    let spec = init_spec(text.as_deref())?;
    super::pgparams::check(&spec, None, &[])?;

    let store = connect(cfg).await?;
    if store.get_cluster_data_raw().await?.is_some() {
        println!("WARNING: The current cluster data will be removed");
    }
    println!(
        "WARNING: The databases managed by the keepers will be overwritten depending on the provided cluster spec."
    );
    if !args.yes && !confirm("Are you sure you want to continue? [yes/no] ")? {
        println!("exiting");
        return Ok(());
    }
    // A plain put, as upstream: init deliberately replaces whatever is there.
    let cd = ClusterData::new(new_uid(), spec, chrono::Utc::now());
    store.put_cluster_data(&cd).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_init_mode_new() {
        let s = init_spec(None).unwrap();
        assert_eq!(s.init_mode, Some(crate::cluster::ClusterInitMode::New));
        assert_eq!(init_spec(Some("  \n")).unwrap(), s);
    }

    #[test]
    fn bad_specs_are_one_line_and_name_the_field() {
        for (input, field) in [
            (r#"{"initMode":"bogus"}"#, "initMode"),
            (r#"{"initMode":"new","failInterval":"-1s"}"#, "failInterval"),
            (r#"{"initMode":"new","maxStandbys":70000}"#, "maxStandbys"),
            (r#"{"initMode":"new","maxStandbys":0}"#, "maxStandbys"),
            (
                r#"{"initMode":"new","pgHBA":["host all\nlocal all"]}"#,
                "pgHBA",
            ),
            (r#"{"initMode":"new""#, "invalid JSON"),
        ] {
            let e = init_spec(Some(input)).unwrap_err().to_string();
            assert!(e.contains(field), "{input}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }
}
