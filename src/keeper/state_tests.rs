//! The keeper's local files, lock, uid and password rules.

use super::state::*;
use super::validate::*;
use super::{AuthMethod, KeeperConfig, KeeperError};
use crate::cluster::Generation;
use std::os::unix::fs::PermissionsExt;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn data_dir_is_created_0700() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("a/b");
    let dir = DataDir::create(&root).unwrap();
    assert_eq!(mode(dir.root()), 0o700);
    assert_eq!(dir.pgdata(), dir.root().join("postgres"));
}

#[test]
fn state_files_round_trip_with_upstream_names_and_mode_0600() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::create(tmp.path()).unwrap();
    assert_eq!(dir.load_db_state().unwrap(), DbState::default());
    let mut s = DbState {
        uid: "d1".into(),
        generation: Generation::new(3),
        initializing: true,
        ..Default::default()
    };
    s.init_pg_parameters.insert("work_mem".into(), "4MB".into());
    dir.save_db_state(&s).unwrap();
    assert_eq!(dir.load_db_state().unwrap(), s);
    assert_eq!(mode(&dir.db_state_path()), 0o600);
    let text = std::fs::read_to_string(dir.db_state_path()).unwrap();
    for key in [
        "\"UID\"",
        "\"Generation\"",
        "\"Initializing\"",
        "\"InitPGParameters\"",
    ] {
        assert!(text.contains(key), "{text}");
    }
    // Upstream writes a nil map as null.
    std::fs::write(
        dir.db_state_path(),
        r#"{"UID":"d2","Generation":0,"Initializing":false,"InitPGParameters":null}"#,
    )
    .unwrap();
    assert_eq!(dir.load_db_state().unwrap().uid, "d2");
    // No temp file left behind.
    let names: Vec<_> = std::fs::read_dir(dir.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn corrupt_state_file_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::create(tmp.path()).unwrap();
    std::fs::write(dir.keeper_state_path(), "{not json").unwrap();
    let err = dir.load_keeper_state().unwrap_err().to_string();
    assert!(err.contains("keeperstate"), "{err}");
}

#[test]
fn second_lock_on_the_same_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::create(tmp.path()).unwrap();
    let held = dir.lock().unwrap();
    let err = dir.lock().unwrap_err().to_string();
    assert!(
        err.contains("cannot take exclusive lock on data dir") && err.contains("another keeper"),
        "{err}"
    );
    drop(held);
    dir.lock().unwrap();
}

#[test]
fn uid_rules() {
    validate_uid("keeper_01").unwrap();
    for bad in ["", "Keeper", "k-1", "k 1", "kéé", "k/1"] {
        let err = validate_uid(bad).unwrap_err().to_string();
        assert!(err.contains("--uid") && err.contains("[a-z0-9_]"), "{err}");
    }
}

#[test]
fn uid_is_generated_once_then_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::create(tmp.path()).unwrap();
    let first = resolve_uid(&dir, None).unwrap();
    assert_eq!(first.uid.as_str().len(), 8);
    let again = resolve_uid(&dir, None).unwrap();
    assert_eq!(first.uid, again.uid);
    // Giving the persisted uid explicitly is fine.
    resolve_uid(&dir, Some(&first.uid)).unwrap();
}

#[test]
fn uid_flag_is_persisted_and_a_different_one_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::create(tmp.path()).unwrap();
    assert_eq!(resolve_uid(&dir, Some(&"k1".into())).unwrap().uid, "k1");
    let err = resolve_uid(&dir, Some(&"k2".into())).unwrap_err();
    assert!(matches!(err, KeeperError::UidMismatch { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("\"k1\"") && msg.contains("\"k2\"") && !msg.contains('\n'),
        "{msg}"
    );
    assert!(matches!(
        resolve_uid(&dir, Some(&"K-2".into())),
        Err(KeeperError::InvalidUid { .. })
    ));
}

#[test]
fn cluster_uid_survives_uid_persisting() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::create(tmp.path()).unwrap();
    dir.save_keeper_state(&KeeperState {
        uid: Default::default(),
        cluster_uid: "c1".into(),
    })
    .unwrap();
    let s = resolve_uid(&dir, Some(&"k1".into())).unwrap();
    assert_eq!(s.cluster_uid, "c1");
}

fn cfg() -> KeeperConfig {
    KeeperConfig {
        uid: None,
        data_dir: "/tmp/x".into(),
        pg_listen_address: "127.0.0.1".into(),
        pg_advertise_address: None,
        pg_port: 5432,
        pg_advertise_port: None,
        pg_bin_path: None,
        pg_socket_dir: None,
        pg_repl_auth_method: AuthMethod::Md5,
        pg_repl_username: "repl".into(),
        pg_repl_password: Some("r".into()),
        pg_su_auth_method: AuthMethod::Md5,
        pg_su_username: "postgres".into(),
        pg_su_password: Some("s".into()),
        pg_trust_networks: Vec::new(),
        can_be_master: true,
        priority: 1,
        can_be_synchronous_replica: true,
        disable_data_dir_locking: false,
    }
}

#[test]
fn auth_rules() {
    validate_auth(&cfg()).unwrap();

    let mut c = cfg();
    c.pg_su_auth_method = AuthMethod::Trust;
    assert!(validate_auth(&c).is_err(), "trust with a password");
    c.pg_su_password = None;
    validate_auth(&c).unwrap();

    let mut c = cfg();
    c.pg_repl_password = None;
    assert!(validate_auth(&c).is_err(), "md5 without a password");

    let mut c = cfg();
    c.pg_repl_username = "postgres".into();
    let err = validate_auth(&c).unwrap_err().to_string();
    assert!(err.contains("passwords are different"), "{err}");
    c.pg_repl_password = c.pg_su_password.clone();
    validate_auth(&c).unwrap();
    c.pg_repl_auth_method = AuthMethod::ScramSha256;
    assert!(validate_auth(&c).is_err(), "same user, different methods");
}
