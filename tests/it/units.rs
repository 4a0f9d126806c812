//! The shipped unit files, example configs and package metadata agree with each other and with
//! the binaries: every unit is packaged in both formats, every service runs a binary of this crate
//! with its role's config file, and every example config loads with the role's real flag table.
//! (`vm-tests/verify-units.sh` runs systemd's own checks; this needs no systemd.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use stolon::config::{Loaded, Role, Sources};
use stolon::keeper::KeeperConfig;
use stolon::proxy::ProxyConfig;
use stolon::sentinel::SentinelConfig;
use stolon::store::StoreConfig;

const ROLES: [(&str, Role); 3] = [
    ("keeper", Role::Keeper),
    ("sentinel", Role::Sentinel),
    ("proxy", Role::Proxy),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `Key=Value` lines per section; repeated keys keep every value, in order.
fn unit(name: &str) -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(repo().join("systemd").join(name)).unwrap();
    let mut section = String::new();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[') {
            section = s.trim_end_matches(']').to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}: bad line {line:?}"));
        out.entry(format!("{section}.{}", k.trim()))
            .or_default()
            .push(v.trim().to_string());
    }
    out
}

fn one<'a>(u: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match u.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("{key}: expected one value, got {other:?}"),
    }
}

fn unit_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("systemd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn services_run_this_crates_binaries_with_their_role_config() {
    for (role, _) in ROLES {
        let name = format!("stolon-{role}@.service");
        let u = unit(&name);
        let exec: Vec<&str> = one(&u, "Service.ExecStart").split_whitespace().collect();
        assert_eq!(exec[0], format!("/usr/bin/stolon-{role}"), "{name}");
        assert!(
            repo().join(format!("src/bin/stolon-{role}.rs")).exists(),
            "{name}: no such binary"
        );
        let args = exec[1..].join(" ");
        assert!(
            args.contains(&format!("--config /etc/stolon/%i/{role}.toml"))
                && args.contains("--cluster-name %i"),
            "{name}: {args}"
        );
        assert_eq!(one(&u, "Service.Type"), "notify", "{name}");
        assert_eq!(one(&u, "Service.NotifyAccess"), "main", "{name}");
        assert_eq!(one(&u, "Service.Restart"), "on-failure", "{name}");
        assert!(u.contains_key("Service.WatchdogSec"), "{name}");
        assert_eq!(one(&u, "Unit.PartOf"), "stolon@%i.target", "{name}");
        // Stopping the target must wait for this unit (stop runs in reverse start order).
        assert!(
            one(&u, "Unit.After")
                .split_whitespace()
                .any(|a| a == "stolon@%i.target"),
            "{name}: not After= stolon@%i.target"
        );
        assert_eq!(one(&u, "Service.CapabilityBoundingSet"), "", "{name}");
    }
}

#[test]
fn keeper_unit_owns_its_data_dir_and_stops_postgres_itself() {
    let u = unit("stolon-keeper@.service");
    assert_eq!(one(&u, "Service.User"), "postgres");
    assert_eq!(one(&u, "Service.KillMode"), "mixed");
    // The data dir flag must be the StateDirectory, the only writable place under ProtectSystem.
    assert_eq!(one(&u, "Service.StateDirectory"), "stolon/%i");
    assert!(one(&u, "Service.ExecStart").contains("--data-dir /var/lib/stolon/%i"));
    assert_eq!(one(&u, "Service.ProtectSystem"), "strict");
    let creds = &u["Service.LoadCredential"];
    for id in ["pg-su-password", "pg-repl-password"] {
        // A relative source: a missing credential is skipped instead of failing the unit.
        assert!(
            creds.contains(&format!("{id}:stolon-%i-{id}")),
            "{id} missing in {creds:?}"
        );
    }
    // RemoveIPC would delete the shared memory of every PostgreSQL run by the postgres user.
    assert!(!u.contains_key("Service.RemoveIPC"));
}

#[test]
fn proxy_socket_keeps_off_postgres_port_and_matches_the_example() {
    let u = unit("stolon-proxy@.socket");
    let listen = one(&u, "Socket.ListenStream");
    assert_eq!(listen, "127.0.0.1:25432");
    let example: toml::Table = toml::from_str(
        &std::fs::read_to_string(repo().join("packaging/etc/stolon/example/proxy.toml")).unwrap(),
    )
    .unwrap();
    assert_eq!(example["port"].as_integer(), Some(25432));
    assert_eq!(example["listen-address"].as_str(), Some("127.0.0.1"));
    let keeper: toml::Table = toml::from_str(
        &std::fs::read_to_string(repo().join("packaging/etc/stolon/example/keeper.toml")).unwrap(),
    )
    .unwrap();
    let pg_port = keeper["pg-port"].as_integer().unwrap();
    assert!(
        pg_port != 5432 && pg_port != 25432,
        "keeper pg-port {pg_port}"
    );
}

/// The read-only socket activates the proxy's service, is told apart by the name the proxy looks
/// for, and takes a port neither the read-write socket nor the example keeper uses.
#[test]
fn proxy_read_only_socket_is_named_as_the_proxy_expects_and_keeps_off_the_other_ports() {
    let u = unit("stolon-proxy-read-only@.socket");
    assert_eq!(
        one(&u, "Socket.FileDescriptorName"),
        stolon::systemd::READ_ONLY_SOCKET_NAME
    );
    assert_eq!(one(&u, "Socket.Service"), "stolon-proxy@%i.service");
    assert_eq!(one(&u, "Unit.PartOf"), "stolon@%i.target");
    let listen = one(&u, "Socket.ListenStream");
    assert_eq!(listen, "127.0.0.1:25431");
    let rw = unit("stolon-proxy@.socket");
    assert_ne!(listen, one(&rw, "Socket.ListenStream"));
    let keeper: toml::Table = toml::from_str(
        &std::fs::read_to_string(repo().join("packaging/etc/stolon/example/keeper.toml")).unwrap(),
    )
    .unwrap();
    assert_ne!(
        Some(listen.rsplit(':').next().unwrap().parse::<i64>().unwrap()),
        keeper["pg-port"].as_integer()
    );
    // Off by default: enabling it is how an operator turns read-only routing on.
    let target = unit("stolon@.target");
    assert!(!one(&target, "Unit.Wants").contains("read-only"));
}

#[test]
fn target_pulls_in_every_role() {
    let u = unit("stolon@.target");
    let wants: Vec<&str> = one(&u, "Unit.Wants").split_whitespace().collect();
    for w in [
        "stolon-keeper@%i.service",
        "stolon-sentinel@%i.service",
        "stolon-proxy@%i.socket",
        "stolon-proxy@%i.service",
    ] {
        assert!(wants.contains(&w), "{w} not in {wants:?}");
    }
}

/// Every key of every example is a flag of its role and every value parses: loaded through the
/// same layers the binaries use, with what the unit passes on the command line. The keeper's
/// passwords come from a credentials directory holding the IDs the unit's LoadCredential= names,
/// so the unit and the keeper agree on them.
#[test]
fn example_configs_load_with_the_roles_flags() {
    let dir = repo().join("packaging/etc/stolon/example");
    let creds = tempfile::tempdir().unwrap();
    for line in &unit("stolon-keeper@.service")["Service.LoadCredential"] {
        let (id, _) = line.split_once(':').unwrap();
        std::fs::write(creds.path().join(id), format!("{id}-secret")).unwrap();
    }
    for (role, r) in ROLES {
        let path = dir.join(format!("{role}.toml"));
        let mut given: BTreeMap<&'static str, String> = BTreeMap::new();
        given.insert("config", path.display().to_string());
        given.insert("cluster-name", "example".into());
        // As with an etcd that has authentication on: its password is a credential too.
        given.insert("store-user", "stolon".into());
        if r == Role::Keeper {
            given.insert("data-dir", "/var/lib/stolon/example".into());
        }
        let env = [(
            "CREDENTIALS_DIRECTORY".to_string(),
            creds.path().display().to_string(),
        )];
        let sources = Sources {
            env: Some(env.into_iter().collect()),
            default_file: None,
        };
        let loaded = Loaded::load_from(r, &given, sources)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let store =
            StoreConfig::from_loaded(&loaded).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            store.credentials.map(|c| c.password).as_deref(),
            Some("store-password-file-secret"),
            "{}: the etcd password credential",
            path.display()
        );
        match r {
            Role::Keeper => {
                let k = KeeperConfig::from_loaded(&loaded)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(k.pg_su_password.as_deref(), Some("pg-su-password-secret"));
                assert_eq!(
                    k.pg_repl_password.as_deref(),
                    Some("pg-repl-password-secret")
                );
            }
            Role::Sentinel => {
                SentinelConfig::from_loaded(&loaded)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            Role::Proxy => {
                ProxyConfig::from_loaded(&loaded)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            Role::Ctl => unreachable!(),
        }
    }
}

/// Both packages ship every unit file, the sysusers/tmpfiles entries and every example config.
#[test]
fn packages_ship_every_unit_and_example() {
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(repo().join("Cargo.toml")).unwrap()).unwrap();
    let meta = &manifest["package"]["metadata"];
    let deb_sources: Vec<&str> = meta["deb"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_array().unwrap()[0].as_str().unwrap())
        .collect();
    let rpm_dests: Vec<&str> = meta["generate-rpm"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["dest"].as_str().unwrap())
        .collect();
    for name in unit_files() {
        assert!(
            deb_sources.contains(&format!("systemd/{name}").as_str()),
            "deb lacks {name}"
        );
        assert!(
            rpm_dests.contains(&format!("/usr/lib/systemd/system/{name}").as_str()),
            "rpm lacks {name}"
        );
    }
    for (role, _) in ROLES {
        let example = format!("packaging/etc/stolon/example/{role}.toml");
        assert!(
            deb_sources.contains(&example.as_str()),
            "deb lacks {example}"
        );
        assert!(
            rpm_dests.contains(&format!("/etc/stolon/example/{role}.toml").as_str()),
            "rpm lacks {example}"
        );
    }
    for dest in [
        "/usr/lib/sysusers.d/stolon.conf",
        "/usr/lib/tmpfiles.d/stolon.conf",
    ] {
        assert!(rpm_dests.contains(&dest), "rpm lacks {dest}");
    }
    for src in [
        "packaging/sysusers.d/deb/stolon.conf",
        "packaging/tmpfiles.d/stolon.conf",
    ] {
        assert!(deb_sources.contains(&src), "deb lacks {src}");
        assert!(Path::new(&repo().join(src)).exists(), "{src} missing");
    }
}
