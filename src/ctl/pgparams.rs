//! stolonctl's check of pgParameters against a PostgreSQL installed where it runs, if any: the
//! same check the keepers make before writing postgresql.conf (src/postgres/params.rs), made
//! before the spec is stored so that a typo is refused at once. Only what the command adds or
//! changes is checked (a parameter the cluster already runs with stays), and only against the
//! major version the cluster's keepers run: another version knows other parameters.

use super::CtlError;
use crate::cluster::ClusterSpec;
use crate::postgres::{PgBinaries, ServerParameters};
use std::path::PathBuf;

/// The newest PostgreSQL found: `postgres` on $PATH, else the distributions' versioned
/// directories (Debian `/usr/lib/postgresql/<v>/bin`, PGDG RPMs `/usr/pgsql-<v>/bin`).
fn local_server_parameters() -> Option<(i32, ServerParameters)> {
    let mut candidates: Vec<(u32, PathBuf)> = Vec::new();
    for (base, prefix, suffix) in [
        ("/usr/lib/postgresql", "", "bin"),
        ("/usr", "pgsql-", "bin"),
    ] {
        let Ok(entries) = std::fs::read_dir(base) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(v) = name
                .strip_prefix(prefix)
                .and_then(|v| v.parse::<u32>().ok())
            {
                candidates.push((v, e.path().join(suffix)));
            }
        }
    }
    candidates.sort();
    let bins = PgBinaries::locate(None).ok().or_else(|| {
        candidates
            .iter()
            .rev()
            .find_map(|(_, dir)| PgBinaries::locate(Some(dir)).ok())
    })?;
    let major = bins.version().ok()?.maj;
    let params = bins.server_parameters().ok().filter(|p| !p.is_empty())?;
    Some((major, params))
}

/// Refuses a spec whose pgParameters (those not already in `before`, the stored spec, with the
/// same value) the local PostgreSQL would refuse; says so on stderr when it cannot ask one of
/// the majors in `cluster_majors` (the keepers' reported versions; empty: not known yet) (the
/// keepers still check, and leave such a parameter out).
pub(super) fn check(
    spec: &ClusterSpec,
    before: Option<&ClusterSpec>,
    cluster_majors: &[i32],
) -> Result<(), CtlError> {
    let stored = before.and_then(|b| b.pg_parameters.as_ref());
    let changed: Vec<(&String, &String)> = spec
        .pg_parameters
        .iter()
        .flatten()
        .filter(|(name, value)| stored.and_then(|s| s.get(*name)) != Some(*value))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let Some((major, server)) = local_server_parameters() else {
        eprintln!(
            "note: no PostgreSQL here to check pgParameters against; the keepers check them and leave out any their server does not accept"
        );
        return Ok(());
    };
    if !cluster_majors.is_empty() && !cluster_majors.contains(&major) {
        eprintln!(
            "note: the PostgreSQL here is {major}, the cluster runs {cluster_majors:?}: pgParameters are not checked here; the keepers check them and leave out any their server does not accept"
        );
        return Ok(());
    }
    for (name, value) in changed {
        server
            .check(name, value)
            .map_err(|why| CtlError::Usage(format!("invalid cluster spec: pgParameters: {why}")))?;
    }
    Ok(())
}

/// The major versions the keepers of `cd` report (0 = unknown, left out), sorted.
pub(super) fn cluster_majors(cd: &crate::cluster::ClusterData) -> Vec<i32> {
    let mut majors: Vec<i32> = cd
        .keepers
        .values()
        .map(|k| k.status.postgres_binary_version.maj)
        .filter(|m| *m > 0)
        .collect();
    majors.sort();
    majors.dedup();
    majors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(params: &str) -> ClusterSpec {
        ClusterSpec::from_json(&format!(r#"{{"initMode":"new","pgParameters":{params}}}"#)).unwrap()
    }

    #[test]
    fn parameters_the_cluster_already_has_are_not_checked_again() {
        // A parameter of another major version, merged from what the keepers run: an update
        // of something else must not trip over it.
        let stored = spec(r#"{"no_such_parameter_here":"16"}"#);
        let updated = spec(r#"{"no_such_parameter_here":"16"}"#);
        assert!(check(&updated, Some(&stored), &[]).is_ok());
    }

    #[test]
    fn another_major_version_than_the_clusters_is_not_asked() {
        let updated = spec(r#"{"no_such_parameter_here":"16"}"#);
        assert!(check(&updated, None, &[99]).is_ok());
    }

    #[test]
    fn a_new_unknown_parameter_is_refused_by_a_local_postgresql_of_the_same_major() {
        let Some((major, _)) = local_server_parameters() else {
            eprintln!("no local PostgreSQL: nothing to ask");
            return;
        };
        let stored = spec(r#"{"work_mem":"4MB"}"#);
        let updated = spec(r#"{"work_mem":"4MB","no_such_parameter_here":"16"}"#);
        let err = check(&updated, Some(&stored), &[major]).unwrap_err();
        assert!(err.to_string().contains("no_such_parameter_here"), "{err}");
    }
}
