//! `pg_controldata`: where a cleanly shut down instance's WAL ends, for a planned switchover
//! (src/keeper/exec.rs).

use super::tools::{command, run_to_end};
use super::{PgBinaries, PgError, Pgdata};

/// The location of the shutdown checkpoint of an instance that was shut down cleanly: every
/// record it ever wrote is before it. An error when the control file says the instance was
/// not shut down cleanly (a crash, an immediate shutdown): then WAL may end anywhere.
pub async fn shutdown_checkpoint(bins: &PgBinaries, pgdata: &Pgdata) -> Result<u64, PgError> {
    let mut cmd = command(&bins.pg_controldata, pgdata.owner());
    // The labels are translated otherwise.
    cmd.env("LC_ALL", "C")
        .arg("-D")
        .arg(std::path::absolute(pgdata.path()).map_err(|e| PgError::io(pgdata.path(), e))?);
    let out = run_to_end(cmd, &bins.pg_controldata).await?;
    parse_shutdown_checkpoint(&out)
}

fn parse_shutdown_checkpoint(out: &str) -> Result<u64, PgError> {
    let field = |label: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(label))
            .map(|v| v.trim_start_matches(':').trim())
    };
    let state = field("Database cluster state").unwrap_or_default();
    if state != "shut down" {
        return Err(PgError::Unexpected {
            what: "state after the switchover stop",
            detail: format!("pg_controldata says {state:?}, not \"shut down\""),
        });
    }
    let location = field("Latest checkpoint location").unwrap_or_default();
    super::files::parse_lsn(location).ok_or_else(|| PgError::Unexpected {
        what: "pg_controldata output",
        detail: format!("no valid \"Latest checkpoint location\" (found {location:?})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "pg_control version number:            1300\n\
        Database cluster state:               shut down\n\
        Latest checkpoint location:           0/3000028\n\
        Latest checkpoint's REDO location:    0/3000028\n";

    #[test]
    fn a_clean_shutdown_gives_its_checkpoint() {
        assert_eq!(parse_shutdown_checkpoint(CLEAN).unwrap(), 0x3000028);
    }

    #[test]
    fn anything_but_a_clean_shutdown_is_refused() {
        let crashed = CLEAN.replace("shut down", "in production");
        let err = parse_shutdown_checkpoint(&crashed).unwrap_err().to_string();
        assert!(err.contains("in production"), "{err}");
        let standby = CLEAN.replace("shut down", "shut down in recovery");
        assert!(parse_shutdown_checkpoint(&standby).is_err());
    }
}
