//! Running the binaries as a user would, and checking how they fail.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `--store-timeout` of the binaries in the CLI tests.
pub(crate) const STORE_TIMEOUT: &str = "3s";

/// Runs a binary with no stdin unless given, and none of the caller's role settings or
/// service-manager variables ([`clean_env`]).
pub(crate) fn run(bin: &Path, args: &[String], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    clean_env(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// No role settings or service-manager variables from the caller's environment.
pub(crate) fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        let role = ["STKEEPER_", "STSENTINEL_", "STPROXY_", "STOLONCTL_"]
            .iter()
            .any(|p| k.starts_with(p));
        let service = [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "JOURNAL_STREAM",
            "CREDENTIALS_DIRECTORY",
        ]
        .contains(&k.as_str());
        if role || service {
            cmd.env_remove(k);
        }
    }
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A failure as issue point 6 wants it: non-zero, exactly one stderr line containing
/// `needle`, no panic.
pub(crate) fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(
        err.lines().count(),
        1,
        "expected one stderr line, got: {err:?}"
    );
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
}

pub(crate) fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}
