use super::*;
use crate::keeper::KeeperConfig;
use crate::postgres::AuthMethod;

fn store_err(given: &[(&'static str, &str)]) -> String {
    let mut all = vec![("cluster-name", "c"), ("store-backend", "etcdv3")];
    all.extend_from_slice(given);
    load(Role::Sentinel, &all, &[], None)
        .unwrap()
        .store_config()
        .unwrap_err()
        .to_string()
}

#[test]
fn store_flag_errors_name_the_flag() {
    for b in ["etcd", "etcdv2", "consul", "kubernetes"] {
        let e = store_err(&[("store-backend", b)]);
        assert!(
            e.starts_with("--store-backend")
                && e.contains("not supported by this stolon; use etcdv3"),
            "{e}"
        );
    }
    assert!(store_err(&[("store-backend", "zookeeper")]).contains("unknown store backend"));
    assert!(
        store_err(&[("store-timeout", "-1s")]).starts_with("--store-timeout: must be positive")
    );
    assert!(
        store_err(&[("store-timeout", "soon")]).starts_with("--store-timeout: invalid duration")
    );
    assert!(
        store_err(&[("store-endpoints", "http://a:1,https://b:2")])
            .starts_with("--store-endpoints")
    );
    assert!(store_err(&[("store-endpoints", "ftp://a:1")]).starts_with("--store-endpoints"));
    let e = load(Role::Sentinel, &[("store-backend", "etcdv3")], &[], None)
        .unwrap()
        .store_config()
        .unwrap_err();
    assert!(
        e.to_string().starts_with("--cluster-name is required"),
        "{e}"
    );
    let e = load(Role::Sentinel, &[("cluster-name", "c")], &[], None)
        .unwrap()
        .store_config()
        .unwrap_err();
    assert!(
        e.to_string().starts_with("--store-backend is required"),
        "{e}"
    );
}

#[test]
fn metrics_listen_address_takes_go_forms_and_names_itself_when_bad() {
    let addr = |v: &str| {
        load(Role::Proxy, &[("metrics-listen-address", v)], &[], None)
            .and_then(|l| l.metrics_listen_address())
            .map_err(|e| e.to_string())
    };
    assert_eq!(addr(""), Ok(None));
    for good in ["0.0.0.0:8080", ":8080", "[::1]:9100", "localhost:9100"] {
        assert_eq!(addr(good), Ok(Some(good.to_string())));
    }
    for bad in ["8080", "host", "host:http", "host:70000"] {
        let e = addr(bad).unwrap_err();
        assert!(e.starts_with("--metrics-listen-address"), "{bad}: {e}");
    }
}

#[test]
fn api_listen_address_is_the_keepers_and_takes_the_same_forms() {
    let addr = |role, v: &str| {
        load(role, &[("api-listen-address", v)], &[], None)
            .and_then(|l| l.api_listen_address())
            .map_err(|e| e.to_string())
    };
    assert_eq!(addr(Role::Keeper, ":8008"), Ok(Some(":8008".to_string())));
    assert_eq!(addr(Role::Keeper, ""), Ok(None));
    let e = addr(Role::Keeper, "8008").unwrap_err();
    assert!(e.starts_with("--api-listen-address"), "{e}");
    assert!(
        load(Role::Sentinel, &[], &[], None)
            .and_then(|l| l.api_listen_address())
            .is_ok_and(|a| a.is_none())
    );
}

fn keeper(given: &[(&'static str, &str)]) -> Result<KeeperConfig, ConfigError> {
    let mut all = vec![
        ("data-dir", "/tmp/k"),
        ("pg-listen-address", "127.0.0.1"),
        ("pg-repl-username", "repl"),
        ("pg-repl-password", "rp"),
        ("pg-su-username", "su"),
        ("pg-su-password", "sp"),
    ];
    all.retain(|(k, _)| !given.iter().any(|(g, _)| g == k));
    all.extend_from_slice(given);
    load(Role::Keeper, &all, &[], None).unwrap().keeper_config()
}

#[test]
fn keeper_flags_resolve() {
    let k = keeper(&[
        ("id", "k_1"),
        ("pg-port", "5433"),
        ("can-be-master", "false"),
    ])
    .unwrap();
    assert_eq!(
        k.uid.as_ref().map(|u| u.as_str()),
        Some("k_1"),
        "--id is an alias of --uid"
    );
    assert_eq!(k.pg_port, 5433);
    assert!(!k.can_be_master);
    assert!(k.can_be_synchronous_replica);
    assert_eq!(k.pg_su_auth_method, AuthMethod::Md5);
    let k = keeper(&[
        ("pg-su-auth-method", "trust"),
        ("pg-su-password", ""),
        ("pg-repl-auth-method", "scram-sha-256"),
    ])
    .unwrap();
    assert_eq!(k.pg_su_password, None);
    assert_eq!(k.pg_repl_auth_method, AuthMethod::ScramSha256);
}

#[test]
fn keeper_bad_values_name_the_flag() {
    let cases: &[(&[(&'static str, &str)], &str)] = &[
        (&[("uid", "Bad-Uid")], "--uid: invalid keeper uid"),
        (
            &[("pg-su-auth-method", "password")],
            "--pg-su-auth-method: unknown auth method",
        ),
        (&[("pg-port", "70000")], "--pg-port: invalid port"),
        (&[("data-dir", "")], "--data-dir is required"),
        (
            &[("pg-repl-password", "")],
            "--pg-repl-password: a replication password is required",
        ),
        (
            &[("pg-su-auth-method", "trust")],
            "--pg-su-auth-method: superuser auth method is trust but a password was given",
        ),
        (
            &[("pg-su-username", "repl"), ("pg-su-password", "other")],
            "--pg-su-password: provided superuser name and replication user name are the same",
        ),
        (
            &[("can-be-master", "maybe")],
            "--can-be-master: invalid boolean",
        ),
    ];
    for (given, want) in cases {
        let e = keeper(given).unwrap_err().to_string();
        assert!(e.starts_with(want), "{given:?}: {e}");
    }
}

#[test]
fn password_file_newline_stripped_and_empty_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pw");
    std::fs::write(&p, "secret\r\n").unwrap();
    let k = keeper(&[
        ("pg-su-password", ""),
        ("pg-su-passwordfile", p.to_str().unwrap()),
    ])
    .unwrap();
    assert_eq!(k.pg_su_password.as_deref(), Some("secret"));
    std::fs::write(&p, "\n").unwrap();
    let e = keeper(&[
        ("pg-su-password", ""),
        ("pg-su-passwordfile", p.to_str().unwrap()),
    ])
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("is empty after removing trailing new line"),
        "{e}"
    );
    let e = keeper(&[("pg-su-passwordfile", p.to_str().unwrap())]).unwrap_err();
    assert!(e.to_string().contains("only one of"), "{e}");
}

#[test]
fn proxy_keepalive_negative_refused() {
    let e = load(Role::Proxy, &[("tcp-keepalive-idle", "-1")], &[], None)
        .unwrap()
        .proxy_config()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--tcp-keepalive-idle: must be positive (got -1)"
    );
    let p = load(
        Role::Proxy,
        &[],
        &[
            ("STPROXY_TCP_KEEPALIVE_COUNT", "4"),
            ("STPROXY_STOP_LISTENING", "false"),
        ],
        None,
    )
    .unwrap()
    .proxy_config()
    .unwrap();
    assert_eq!(p.tcp_keepalive_count, 4);
    assert!(!p.stop_listening);
    assert_eq!(p.port, 5432);
}

#[test]
fn sentinel_initial_spec_validated() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("spec.json");
    std::fs::write(&p, r#"{"initMode":"new","maxStandbys":0}"#).unwrap();
    let e = load(
        Role::Sentinel,
        &[("initial-cluster-spec", p.to_str().unwrap())],
        &[],
        None,
    )
    .unwrap()
    .sentinel_config()
    .unwrap_err();
    assert!(
        e.to_string().starts_with("--initial-cluster-spec")
            && e.to_string().contains("maxStandbys"),
        "{e}"
    );
}

fn keeper_with_credentials(
    given: &[(&'static str, &str)],
    dir: &Path,
) -> Result<KeeperConfig, ConfigError> {
    let mut all = vec![
        ("data-dir", "/tmp/k"),
        ("pg-listen-address", "127.0.0.1"),
        ("pg-repl-username", "repl"),
        ("pg-su-username", "su"),
    ];
    all.extend_from_slice(given);
    let creds = dir.to_str().unwrap();
    load(
        Role::Keeper,
        &all,
        &[("CREDENTIALS_DIRECTORY", creds)],
        None,
    )
    .unwrap()
    .keeper_config()
}

#[test]
fn passwords_from_systemd_credentials() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pg-su-password"), "su-secret\n").unwrap();
    std::fs::write(dir.path().join("pg-repl-password"), "repl-secret").unwrap();
    let k = keeper_with_credentials(&[], dir.path()).unwrap();
    assert_eq!(k.pg_su_password.as_deref(), Some("su-secret"));
    assert_eq!(k.pg_repl_password.as_deref(), Some("repl-secret"));

    // A flag or a password file wins over the credential.
    let file = dir.path().join("other");
    std::fs::write(&file, "from-file").unwrap();
    let k = keeper_with_credentials(
        &[
            ("pg-su-password", "from-flag"),
            ("pg-repl-passwordfile", file.to_str().unwrap()),
        ],
        dir.path(),
    )
    .unwrap();
    assert_eq!(k.pg_su_password.as_deref(), Some("from-flag"));
    assert_eq!(k.pg_repl_password.as_deref(), Some("from-file"));

    // trust ignores it.
    let k = keeper_with_credentials(&[("pg-su-auth-method", "trust")], dir.path()).unwrap();
    assert_eq!(k.pg_su_password, None);
}

#[test]
fn trust_networks_are_checked_networks() {
    let k = keeper(&[
        ("pg-su-auth-method", "trust"),
        ("pg-su-password", ""),
        ("pg-trust-networks", "10.0.0.0/24, fd00::/64"),
    ]);
    let k = k.unwrap();
    assert_eq!(k.pg_trust_networks, vec!["10.0.0.0/24", "fd00::/64"]);
    for bad in [
        "10.0.0.0",
        "10.0.0.0/33",
        "db.example/24",
        "0.0.0.0/0 trust",
    ] {
        let e = keeper(&[("pg-trust-networks", bad)])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--pg-trust-networks: "), "{bad}: {e}");
    }
}

#[test]
fn store_tls_files_from_systemd_credentials() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["store-cert-file", "store-key", "store-ca-file"] {
        std::fs::write(dir.path().join(name), "pem").unwrap();
    }
    let creds = dir.path().to_str().unwrap();
    let store = |given: &[(&'static str, &str)]| {
        let mut all = vec![("cluster-name", "c"), ("store-backend", "etcdv3")];
        all.extend_from_slice(given);
        load(Role::Proxy, &all, &[("CREDENTIALS_DIRECTORY", creds)], None)
            .unwrap()
            .store_config()
            .unwrap()
    };
    let s = store(&[]);
    assert_eq!(s.cert_file, Some(dir.path().join("store-cert-file")));
    assert_eq!(s.key_file, Some(dir.path().join("store-key")));
    assert_eq!(s.ca_file, Some(dir.path().join("store-ca-file")));
    // A flag wins over the credential.
    let s = store(&[("store-ca-file", "/etc/ssl/ca.pem")]);
    assert_eq!(s.ca_file, Some(PathBuf::from("/etc/ssl/ca.pem")));
    // Without credentials nothing is made up.
    let s = load(
        Role::Proxy,
        &[("cluster-name", "c"), ("store-backend", "etcdv3")],
        &[],
        None,
    )
    .unwrap()
    .store_config()
    .unwrap();
    assert_eq!(s.key_file, None);
}

#[test]
fn store_user_needs_its_password_from_a_file_or_credential() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().to_str().unwrap();
    let store = |given: &[(&'static str, &str)], env: &[(&str, &str)]| {
        let mut all = vec![("cluster-name", "c"), ("store-backend", "etcdv3")];
        all.extend_from_slice(given);
        load(Role::Sentinel, &all, env, None)
            .unwrap()
            .store_config()
            .map_err(|e| e.to_string())
    };
    let e = store(&[("store-user", "stolon")], &[]).unwrap_err();
    assert!(
        e.starts_with("--store-password-file: --store-user needs a password"),
        "{e}"
    );
    let file = dir.path().join("pw");
    std::fs::write(&file, "etcd secret\n").unwrap();
    let e = store(&[("store-password-file", file.to_str().unwrap())], &[]).unwrap_err();
    assert!(e.starts_with("--store-user: "), "{e}");
    let s = store(
        &[
            ("store-user", "stolon"),
            ("store-password-file", file.to_str().unwrap()),
        ],
        &[],
    )
    .unwrap();
    let c = s.credentials.unwrap();
    assert_eq!(
        (c.user.as_str(), c.password.as_str()),
        ("stolon", "etcd secret")
    );
    assert!(!format!("{c:?}").contains("secret"));
    // The systemd credential named like the flag.
    std::fs::write(dir.path().join("store-password-file"), "from credential").unwrap();
    let s = store(
        &[("store-user", "stolon")],
        &[("CREDENTIALS_DIRECTORY", creds)],
    )
    .unwrap();
    assert_eq!(s.credentials.unwrap().password, "from credential");
}

#[test]
fn bad_or_missing_credential_named_without_its_content() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pg-su-password"), "\n").unwrap();
    std::fs::write(dir.path().join("pg-repl-password"), "repl-secret").unwrap();
    let e = keeper_with_credentials(&[], dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("--pg-su-password: systemd credential: superuser password file"),
        "{e}"
    );
    assert!(e.contains("is empty"), "{e}");

    std::fs::remove_file(dir.path().join("pg-su-password")).unwrap();
    let e = keeper_with_credentials(&[], dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("systemd credential named pg-su-password"), "{e}");
    assert!(!e.contains("repl-secret"), "{e}");
    assert!(
        !format!(
            "{:?}",
            load(Role::Keeper, &[("pg-su-password", "hunter2")], &[], None).unwrap()
        )
        .contains("hunter2")
    );
}

#[test]
fn password_file_trailing_newline_stripped_empty_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("pw");
    std::fs::write(&p, "s3cret\r\n").unwrap();
    assert_eq!(read_password_file(&p, "superuser").unwrap(), "s3cret");
    std::fs::write(&p, "\n").unwrap();
    let err = read_password_file(&p, "superuser").unwrap_err();
    assert!(err.contains("empty") && err.contains("superuser"), "{err}");
    let err = read_password_file(&tmp.path().join("missing"), "replication")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing") && err.contains("replication"),
        "{err}"
    );
}
