//! Forwarding PostgreSQL's output (the server's stderr, pg_basebackup's messages) to tracing
//! under target `postgres`, each line at the level its own severity tag says, so the journal
//! priority is right.

/// The log level a postgres output line is forwarded at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PgLevel {
    Error,
    Warn,
    Info,
    Debug,
}

/// FATALs that are part of normal operation, not errors to alert on:
/// - a fast shutdown, which the keeper itself asks for, ends the WAL receiver and every session
///   with `terminating … due to administrator command` (57P01), as does pg_terminate_backend;
/// - while PostgreSQL starts, stops or recovers, connections (the keeper's own readiness probes
///   first of all) are refused with 57P03 `the database system is starting up` / `is shutting
///   down` / `is not yet accepting connections`.
const ROUTINE_FATALS: &[&str] = &[
    "due to administrator command",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is not yet accepting connections",
];

/// The level of one line of postgres's stderr, from its severity tag (`LOG:  `, `ERROR:  `, …,
/// always followed by two spaces). The earliest tag counts: the log_line_prefix comes before it
/// and the message text after it may quote another. Detail lines (`DETAIL:`, `HINT:`,
/// `STATEMENT:`, …) and untagged continuation lines belong to the message before them and take
/// its level (`previous`); other untagged lines (a translated message, output before logging is
/// set up) are info.
pub(super) fn line_level(line: &str, previous: PgLevel) -> PgLevel {
    const TAGS: &[(&str, Option<PgLevel>)] = &[
        ("PANIC:  ", Some(PgLevel::Error)),
        ("FATAL:  ", Some(PgLevel::Error)),
        ("ERROR:  ", Some(PgLevel::Error)),
        ("WARNING:  ", Some(PgLevel::Warn)),
        ("LOG:  ", Some(PgLevel::Info)),
        ("NOTICE:  ", Some(PgLevel::Info)),
        ("INFO:  ", Some(PgLevel::Info)),
        // Every DEBUGn level prints as DEBUG.
        ("DEBUG:  ", Some(PgLevel::Debug)),
        ("DETAIL:  ", None),
        ("HINT:  ", None),
        ("CONTEXT:  ", None),
        ("STATEMENT:  ", None),
        ("QUERY:  ", None),
        ("LOCATION:  ", None),
        // Client programs (pg_basebackup): `pg_basebackup: error: …`.
        (": error: ", Some(PgLevel::Error)),
        (": warning: ", Some(PgLevel::Warn)),
        (": detail: ", None),
        (": hint: ", None),
    ];
    let earliest = TAGS
        .iter()
        .filter_map(|(tag, level)| line.find(tag).map(|at| (at, *level)))
        .min_by_key(|(at, _)| *at);
    match earliest {
        Some((_, Some(PgLevel::Error))) if ROUTINE_FATALS.iter().any(|r| line.contains(r)) => {
            PgLevel::Info
        }
        Some((_, Some(level))) => level,
        Some((_, None)) => previous,
        None if line.starts_with([' ', '\t']) => previous,
        None => PgLevel::Info,
    }
}

/// Logs one forwarded line at `level`, with the postmaster's pid when it is a server line. The
/// `postgres: ` prefix tells PostgreSQL's own lines (and their untagged continuations) from the
/// keeper's where the target is not shown (stderr).
pub(super) fn forward(level: PgLevel, pid: Option<i32>, line: &str) {
    match (level, pid) {
        (PgLevel::Error, Some(pid)) => tracing::error!(target: "postgres", pid, "postgres: {line}"),
        (PgLevel::Warn, Some(pid)) => tracing::warn!(target: "postgres", pid, "postgres: {line}"),
        (PgLevel::Info, Some(pid)) => tracing::info!(target: "postgres", pid, "postgres: {line}"),
        (PgLevel::Debug, Some(pid)) => tracing::debug!(target: "postgres", pid, "postgres: {line}"),
        (PgLevel::Error, None) => tracing::error!(target: "postgres", "postgres: {line}"),
        (PgLevel::Warn, None) => tracing::warn!(target: "postgres", "postgres: {line}"),
        (PgLevel::Info, None) => tracing::info!(target: "postgres", "postgres: {line}"),
        (PgLevel::Debug, None) => tracing::debug!(target: "postgres", "postgres: {line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_lines_get_their_severity() {
        use PgLevel::*;
        let prefix = "2024-05-01 10:00:00.123 UTC [4242] ";
        let at = |rest: &str, prev| line_level(&format!("{prefix}{rest}"), prev);
        assert_eq!(
            at(
                "LOG:  database system is ready to accept connections",
                Error
            ),
            Info
        );
        assert_eq!(
            at(
                "WARNING:  archive_mode enabled, yet archiving is not configured",
                Info
            ),
            Warn
        );
        assert_eq!(at("ERROR:  relation \"x\" does not exist", Info), Error);
        assert_eq!(at("FATAL:  connection to client lost", Info), Error);
        assert_eq!(at("PANIC:  could not write to file", Info), Error);
        assert_eq!(
            at("DEBUG:  checkpointer updated shared memory", Info),
            Debug
        );
        // Detail lines and continuations follow the message they belong to.
        assert_eq!(at("STATEMENT:  select 1/0", Error), Error);
        assert_eq!(at("HINT:  Is another postmaster running?", Warn), Warn);
        assert_eq!(line_level("\tfrom a multi-line statement", Error), Error);
        // A quoted tag in the text does not override the real one.
        assert_eq!(at("LOG:  statement: SELECT 'ERROR:  boom'", Error), Info);
        assert_eq!(line_level("some untagged output", Error), Info);
        // The keeper's own fast shutdown, and connections refused while starting, are routine.
        assert_eq!(at("FATAL:  the database system is starting up", Info), Info);
        assert_eq!(
            at(
                "FATAL:  terminating walreceiver process due to administrator command",
                Info
            ),
            Info
        );
        // pg_basebackup's own messages and the server's it relays.
        assert_eq!(
            line_level("pg_basebackup: error: could not connect to server", Info),
            Error
        );
        assert_eq!(line_level("pg_basebackup: warning: slow", Info), Warn);
        assert_eq!(line_level("pg_basebackup: hint: try again", Error), Error);
        assert_eq!(
            line_level(
                "WARNING:  skipping special file \"./postgresql.auto.conf\"",
                Info
            ),
            Warn
        );
        assert_eq!(
            line_level(
                "pg_basebackup: initiating base backup, waiting for checkpoint",
                Warn
            ),
            Info
        );
    }
}
