//! stolonctl's check of pgParameters against a PostgreSQL installed where it runs, if any: the
//! same check the keepers make before writing postgresql.conf (src/postgres/params.rs), made
//! before the spec is stored so that a typo is refused at once.

use super::CtlError;
use crate::cluster::ClusterSpec;
use crate::postgres::{PgBinaries, ServerParameters};
use std::path::PathBuf;

/// The newest PostgreSQL found: `postgres` on $PATH, else the distributions' versioned
/// directories (Debian `/usr/lib/postgresql/<v>/bin`, PGDG RPMs `/usr/pgsql-<v>/bin`).
fn local_server_parameters() -> Option<ServerParameters> {
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
    bins.server_parameters().ok().filter(|p| !p.is_empty())
}

/// Refuses a spec whose pgParameters the local PostgreSQL would refuse; says so on stderr when
/// there is none to ask (the keepers still check, and leave such a parameter out).
pub(super) fn check(spec: &ClusterSpec) -> Result<(), CtlError> {
    let Some(params) = spec.pg_parameters.as_ref().filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let Some(server) = local_server_parameters() else {
        eprintln!(
            "note: no PostgreSQL here to check pgParameters against; the keepers check them and leave out any their server does not accept"
        );
        return Ok(());
    };
    for (name, value) in params {
        server
            .check(name, value)
            .map_err(|why| CtlError::Usage(format!("invalid cluster spec: pgParameters: {why}")))?;
    }
    Ok(())
}
