//! The roles of the tests that drive PostgreSQL directly (tests/it/postgres_*.rs), with
//! passwords that need quoting everywhere they go (conninfo, password file, SQL).

use stolon::keeper::AuthMethod;
use stolon::postgres::Login;

pub(crate) const SU: &str = "su";
pub(crate) const SU_PW: &str = "su pass'word";
pub(crate) const REPL: &str = "repl";
pub(crate) const REPL_PW: &str = "repl:pw\\x";

/// As the pg_hba.conf of these tests checks them: md5 for the superuser, SCRAM for replication.
pub(crate) const SU_LOGIN: Login = Login {
    user: SU,
    password: Some(SU_PW),
    method: AuthMethod::Md5,
};
pub(crate) const REPL_LOGIN: Login = Login {
    user: REPL,
    password: Some(REPL_PW),
    method: AuthMethod::ScramSha256,
};

/// The parameters the keeper manages, for a test instance on `port` with its socket in
/// `socket_dir`.
pub(crate) fn managed(
    port: u16,
    socket_dir: &std::path::Path,
    synchronous_standby_names: &str,
) -> stolon::postgres::ManagedParams {
    stolon::postgres::ManagedParams {
        listen_address: "127.0.0.1".into(),
        port,
        socket_dir: socket_dir.display().to_string(),
        max_standbys: 5,
        additional_wal_senders: 2,
        use_pg_rewind: false,
        synchronous_standby_names: synchronous_standby_names.into(),
        scram: true,
    }
}

/// pg_hba.conf as the keeper renders it for these roles (md5 rules also accept the SCRAM
/// verifiers password_encryption makes).
pub(crate) fn hba(is_master: bool) -> Vec<String> {
    stolon::postgres::render_pg_hba(&stolon::postgres::HbaParams {
        su_username: SU,
        su_auth: AuthMethod::Md5,
        repl_username: REPL,
        repl_auth: AuthMethod::ScramSha256,
        access_mode: stolon::cluster::SuReplAccessMode::All,
        is_master,
        other_db_addresses: &[],
        spec_hba: None,
        trust_networks: &[],
        internal_only: false,
    })
}
