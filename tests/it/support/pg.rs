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
