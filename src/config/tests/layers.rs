use super::*;
use crate::store::StoreBackend;

#[test]
fn defaults_when_nothing_is_set() {
    let l = load(
        Role::Sentinel,
        &[("cluster-name", "c"), ("store-backend", "etcdv3")],
        &[],
        None,
    )
    .unwrap();
    let s = l.store_config().unwrap();
    assert_eq!(s.timeout, std::time::Duration::from_secs(5));
    assert_eq!(s.prefix, "stolon/cluster");
    assert_eq!(s.endpoints, vec!["http://127.0.0.1:2379".to_string()]);
    assert_eq!(l.log_settings().unwrap().level, tracing::Level::INFO);
}

#[test]
fn precedence_flags_over_env_over_file_over_defaults() {
    let f = toml_file(
        "cluster-name = \"file\"\nstore_backend = \"etcdv3\"\nstore-prefix = \"fileprefix\"\n\
         store-timeout = \"7s\"\nlog-level = \"warn\"\n",
    );
    let env_pairs = [
        ("STSENTINEL_STORE_PREFIX", "envprefix"),
        ("STSENTINEL_CLUSTER_NAME", "env"),
    ];
    let l = load(
        Role::Sentinel,
        &[("cluster-name", "flag")],
        &env_pairs,
        Some(f.path()),
    )
    .unwrap();
    let s = l.store_config().unwrap();
    assert_eq!(s.cluster_name, "flag", "flag beats env and file");
    assert_eq!(s.prefix, "envprefix", "env beats file");
    assert_eq!(
        s.timeout,
        std::time::Duration::from_secs(7),
        "file beats default"
    );
    assert_eq!(
        s.backend,
        StoreBackend::Etcdv3,
        "underscore spelling accepted"
    );
    assert_eq!(l.log_settings().unwrap().level, tracing::Level::WARN);
    assert_eq!(l.file.as_deref(), Some(f.path()));
}

#[test]
fn explicit_config_path_from_flag_or_env() {
    let f = toml_file("cluster-name = \"fromfile\"\n");
    let path = f.path().to_str().unwrap();
    let l = load(Role::Proxy, &[("config", path)], &[], None).unwrap();
    assert_eq!(l.get(&flags::CLUSTER_NAME).as_deref(), Some("fromfile"));
    let l = load(Role::Proxy, &[], &[("STPROXY_CONFIG", path)], None).unwrap();
    assert_eq!(l.get(&flags::CLUSTER_NAME).as_deref(), Some("fromfile"));
    let e = load(Role::Proxy, &[("config", "/nonexistent/x.toml")], &[], None).unwrap_err();
    assert!(
        e.to_string().starts_with("config file /nonexistent/x.toml"),
        "{e}"
    );
}

#[test]
fn other_roles_env_is_ignored() {
    let l = load(Role::Keeper, &[], &[("STPROXY_CLUSTER_NAME", "x")], None).unwrap();
    assert_eq!(l.get(&flags::CLUSTER_NAME), None);
}

#[test]
fn empty_env_counts_as_unset() {
    let l = load(Role::Proxy, &[], &[("STPROXY_STORE_PREFIX", "")], None).unwrap();
    assert_eq!(
        l.get(&flags::STORE_PREFIX).as_deref(),
        Some("stolon/cluster")
    );
}

#[test]
fn unknown_file_key_refused() {
    let f = toml_file("cluster-nmae = \"x\"\n");
    let e = load(Role::Proxy, &[], &[], Some(f.path())).unwrap_err();
    assert!(
        e.to_string().contains("unknown key \"cluster-nmae\""),
        "{e}"
    );
    // A keeper flag is not a proxy setting.
    let f = toml_file("data-dir = \"/x\"\n");
    assert!(load(Role::Proxy, &[], &[], Some(f.path())).is_err());
}

#[test]
fn bad_toml_is_one_line() {
    let f = toml_file("cluster-name = \n");
    let e = load(Role::Proxy, &[], &[], Some(f.path()))
        .unwrap_err()
        .to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("line 1"), "{e}");
}

#[test]
fn endpoints_list_in_file() {
    let f = toml_file(
        "store-endpoints = [\"127.0.0.1:1\", \"http://127.0.0.2:2\"]\ncluster-name=\"c\"\nstore-backend=\"etcdv3\"\n",
    );
    let s = load(Role::Proxy, &[], &[], Some(f.path()))
        .unwrap()
        .store_config()
        .unwrap();
    assert_eq!(
        s.endpoints,
        vec!["http://127.0.0.1:1", "http://127.0.0.2:2"]
    );
}

#[test]
fn log_level_and_deprecated_debug() {
    let e = load(Role::Proxy, &[("log-level", "loud")], &[], None)
        .unwrap()
        .log_settings()
        .unwrap_err();
    assert!(
        e.to_string().starts_with("--log-level: unknown log level"),
        "{e}"
    );
    let l = load(Role::Proxy, &[("debug", "true")], &[], None)
        .unwrap()
        .log_settings()
        .unwrap();
    assert_eq!(l.level, tracing::Level::DEBUG);
    assert!(l.deprecated_debug);
    let l = load(Role::Proxy, &[("log-color", "false")], &[], None)
        .unwrap()
        .log_settings()
        .unwrap();
    assert_eq!(l.color, Some(false));
}
