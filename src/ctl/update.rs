//! `stolonctl update [spec-json] [-p/--patch] [-f file|-]`: replace or merge-patch the spec.

use super::{CtlError, connect, modify_cluster_data, read_input};
use crate::cluster::{ClusterSpec, parse_spec_input};
use crate::store::StoreConfig;

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// The new cluster spec (or, with --patch, the merge patch) as JSON
    pub spec: Option<String>,
    /// Apply the JSON as an RFC 7386 merge patch to the stored spec
    #[arg(short = 'p', long)]
    pub patch: bool,
    /// File containing the spec or patch ("-" for stdin)
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
}

/// The spec that replaces `stored`: `input` itself, or with `patch` the merge patch applied to
/// the stored (not defaulted) spec, so a patch leaves unset fields following the defaults.
/// Checked as an update (valid, same initMode, no master→standby).
pub fn updated_spec(
    stored: &ClusterSpec,
    input: &str,
    patch: bool,
) -> Result<ClusterSpec, CtlError> {
    let new = if patch {
        let patch: serde_json::Value = serde_json::from_str(input)
            .map_err(|e| CtlError::Usage(format!("invalid cluster spec: invalid JSON: {e}")))?;
        let mut doc = serde_json::to_value(stored)
            .map_err(|e| CtlError::Io(format!("cannot encode the stored spec: {e}")))?;
        json_patch::merge(&mut doc, &patch);
        parse_spec_input(&doc.to_string())?
    } else {
        parse_spec_input(input)?
    };
    stored.check_update(&new)?;
    Ok(new)
}

pub(super) async fn run(args: UpdateArgs, cfg: &StoreConfig) -> Result<(), CtlError> {
    let input = match (&args.spec, &args.file) {
        (Some(s), None) => s.clone(),
        (None, Some(f)) => read_input(f)?,
        (Some(_), Some(_)) => {
            return Err(CtlError::Usage(
                "only one of the spec argument and --file may be given".into(),
            ));
        }
        (None, None) => {
            return Err(CtlError::Usage(
                "no cluster spec given: pass it as argument or with --file".into(),
            ));
        }
    };
    // Syntax is checked before connecting; the rules need the stored spec.
    serde_json::from_str::<serde_json::Value>(&input)
        .map_err(|e| CtlError::Usage(format!("invalid cluster spec: invalid JSON: {e}")))?;
    let store = connect(cfg).await?;
    modify_cluster_data(&store, |cd| {
        let new = updated_spec(&cd.cluster.spec, &input, args.patch)?;
        super::pgparams::check(
            &new,
            Some(&cd.cluster.spec),
            &super::pgparams::cluster_majors(cd),
        )?;
        cd.cluster.spec = new;
        Ok(())
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> ClusterSpec {
        ClusterSpec::from_json(r#"{"initMode":"new","sleepInterval":"2s","maxStandbys":5}"#)
            .unwrap()
    }

    #[test]
    fn patch_merges_into_the_stored_spec() {
        let s = updated_spec(
            &stored(),
            r#"{"failInterval":"7s","maxStandbys":null}"#,
            true,
        )
        .unwrap();
        assert_eq!(s.sleep_interval.unwrap().to_string(), "2s", "kept");
        assert_eq!(s.fail_interval.unwrap().to_string(), "7s", "added");
        assert_eq!(
            s.max_standbys, None,
            "null removes the field: back to the default"
        );
    }

    #[test]
    fn replacement_drops_unmentioned_fields() {
        let s = updated_spec(
            &stored(),
            r#"{"initMode":"new","failInterval":"11s"}"#,
            false,
        )
        .unwrap();
        assert_eq!(s.sleep_interval, None);
    }

    #[test]
    fn update_rules_apply() {
        let e = updated_spec(
            &stored(),
            r#"{"initMode":"existing","existingConfig":{"keeperUID":"k"}}"#,
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("initMode"), "{e}");
        let e = updated_spec(&stored(), r#"{"maxStandbys":0}"#, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("maxStandbys"), "{e}");
        let e = updated_spec(&stored(), r#"{"sleepInterval":"-1s"}"#, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sleepInterval"), "{e}");
        let e = updated_spec(&stored(), r#"{"sleepInterval":"#, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid JSON"), "{e}");
    }
}

#[cfg(test)]
mod fuzz {
    //! Fuzz target for `update --patch` (see src/cluster/fuzz_tests.rs).
    use super::*;
    use crate::cluster::fuzz_tests::{fuzz_config, spec_like_json};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(fuzz_config())]

        /// Any patch: an error, or a spec that passes every input check and keeps initMode.
        #[test]
        fn fuzz_any_patch_gives_an_error_or_a_checked_spec(patch in spec_like_json(), replace in any::<bool>()) {
            let stored = ClusterSpec::from_json(r#"{"initMode":"new","sleepInterval":"2s"}"#).unwrap();
            if let Ok(new) = updated_spec(&stored, &patch.to_string(), !replace) {
                prop_assert!(new.check_input().is_ok());
                prop_assert_eq!(new.init_mode, stored.init_mode);
            }
        }
    }
}
