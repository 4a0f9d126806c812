//! Issue point 6: every bad input gets a one-line error naming the field or flag, a non-zero
//! exit, no panic, and nothing written to the store (checked against a real etcd).

use crate::support;

use support::Etcd;
use support::cli::{STORE_TIMEOUT, args, assert_one_line_error, run};

use support::CTL;
use support::KEEPER;
use support::PROXY;
use support::SENTINEL;

/// (spec JSON, the field the error must name)
const BAD_SPECS: &[(&str, &str)] = &[
    (r#"{"initMode":"new""#, "invalid JSON"),
    (r#"not json"#, "invalid JSON"),
    (r#"{"initMode":"bogus"}"#, "initMode"),
    (r#"{"initMode":"new","role":"primary"}"#, "role"),
    (
        r#"{"initMode":"new","sleepInterval":"-5s"}"#,
        "sleepInterval",
    ),
    (r#"{"initMode":"new","failInterval":"-1m"}"#, "failInterval"),
    (
        r#"{"initMode":"new","failInterval":"soon"}"#,
        "failInterval",
    ),
    (
        r#"{"initMode":"new","sleepInterval":"5s","failInterval":"8s"}"#,
        "at least twice sleepInterval",
    ),
    (r#"{"initMode":"new","maxStandbys":70000}"#, "maxStandbys"),
    (r#"{"initMode":"new","maxStandbys":0}"#, "maxStandbys"),
    (
        r#"{"initMode":"new","maxStandbysPerSender":-1}"#,
        "maxStandbysPerSender",
    ),
    (
        r#"{"initMode":"new","pgHBA":["host all all 0.0.0.0/0 md5\nlocal all all trust"]}"#,
        "pgHBA",
    ),
];

fn ctl(etcd: &Etcd, cluster: &str, rest: &[&str]) -> std::process::Output {
    let mut a = etcd.flags(cluster, STORE_TIMEOUT);
    a.extend(args(rest));
    run(&CTL, &a, None)
}

#[test]
fn init_with_bad_spec_writes_nothing() {
    let etcd = Etcd::start();
    for (spec, field) in BAD_SPECS {
        let o = ctl(&etcd, "c1", &["init", "-y", spec]);
        assert_one_line_error(&o, field);
    }
    // From a file and from stdin too.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("spec.json");
    std::fs::write(&f, r#"{"initMode":"new","maxStandbys":0}"#).unwrap();
    let o = ctl(&etcd, "c1", &["init", "-y", "-f", f.to_str().unwrap()]);
    assert_one_line_error(&o, "maxStandbys");
    let mut a = etcd.flags("c1", STORE_TIMEOUT);
    a.extend(args(&["init", "-y", "-f", "-"]));
    let o = run(&CTL, &a, Some(r#"{"initMode":"bogus"}"#));
    assert_one_line_error(&o, "initMode");
    assert_eq!(
        etcd.keys(""),
        Vec::<String>::new(),
        "nothing may be written"
    );
}

#[test]
fn update_with_bad_spec_leaves_clusterdata_unchanged() {
    let etcd = Etcd::start();
    let o = ctl(&etcd, "c2", &["init", "-y"]);
    assert!(o.status.success(), "{}", support::cli::stderr(&o));
    let before = etcd.cluster_data("c2").expect("init wrote clusterdata");
    for (spec, field) in BAD_SPECS {
        assert_one_line_error(&ctl(&etcd, "c2", &["update", "--patch", spec]), field);
        // A full replacement needs initMode; the bad field is still the one reported.
        assert_one_line_error(&ctl(&etcd, "c2", &["update", spec]), field);
    }
    assert_one_line_error(
        &ctl(
            &etcd,
            "c2",
            &[
                "update",
                "--patch",
                r#"{"initMode":"existing","existingConfig":{"keeperUID":"k"}}"#,
            ],
        ),
        "initMode",
    );
    assert_one_line_error(&ctl(&etcd, "c2", &["update"]), "no cluster spec given");
    assert_eq!(etcd.cluster_data("c2"), Some(before));
}

#[test]
fn clusterdata_write_refuses_bad_documents() {
    let etcd = Etcd::start();
    let cases = [
        ("{", "clusterdata"),
        (r#"{"formatVersion":2,"cluster":{}}"#, "formatVersion"),
        (
            r#"{"formatVersion":1,"cluster":{"spec":{"initMode":"new","maxStandbys":0}}}"#,
            "maxStandbys",
        ),
        (
            r#"{"formatVersion":1,"cluster":{"spec":{"initMode":"bogus"}}}"#,
            "initMode",
        ),
    ];
    for (doc, field) in cases {
        let mut a = etcd.flags("c3", STORE_TIMEOUT);
        a.extend(args(&["clusterdata", "write", "-y"]));
        assert_one_line_error(&run(&CTL, &a, Some(doc)), field);
    }
    assert_eq!(etcd.keys(""), Vec::<String>::new());
}

/// Minimal valid keeper flags, so each case differs by one bad value.
fn keeper_args(etcd: &Etcd, dir: &str, bad: &[(&str, &str)]) -> Vec<String> {
    let mut base: Vec<(&str, String)> = vec![
        ("--data-dir", dir.to_string()),
        ("--pg-listen-address", "127.0.0.1".into()),
        ("--pg-repl-username", "repl".into()),
        ("--pg-repl-password", "replpw".into()),
        ("--pg-su-username", "su".into()),
        ("--pg-su-password", "supw".into()),
    ];
    base.retain(|(k, _)| !bad.iter().any(|(b, _)| b == k));
    let mut a = etcd.flags("ck", STORE_TIMEOUT);
    for (k, v) in base {
        a.push(format!("{k}={v}"));
    }
    for (k, v) in bad {
        a.push(format!("{k}={v}"));
    }
    a
}

#[test]
fn daemon_bad_flags_fail_before_touching_the_store() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let keeper_cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("--pg-su-auth-method", "password")],
            "--pg-su-auth-method",
        ),
        (
            &[("--pg-repl-auth-method", "ident")],
            "--pg-repl-auth-method",
        ),
        (&[("--uid", "Keeper-1")], "--uid"),
        (&[("--uid", "k 1")], "--uid"),
        (&[("--id", "K1")], "--id"),
        (&[("--pg-port", "-1")], "--pg-port"),
        (&[("--log-level", "verbose")], "--log-level"),
        (&[("--store-timeout", "-3s")], "--store-timeout"),
        (&[("--store-timeout", "3 parsecs")], "--store-timeout"),
        (&[("--data-dir", "")], "--data-dir"),
        (&[("--cluster-name", "")], "--cluster-name"),
        (&[("--store-backend", "zookeeper")], "unknown store backend"),
        (
            &[("--store-backend", "etcd")],
            "not supported by this stolon; use etcdv3",
        ),
        (
            &[("--store-backend", "etcdv2")],
            "not supported by this stolon; use etcdv3",
        ),
        (
            &[("--store-backend", "consul")],
            "not supported by this stolon; use etcdv3",
        ),
        (
            &[("--store-backend", "kubernetes")],
            "not supported by this stolon; use etcdv3",
        ),
    ];
    for (bad, flag) in keeper_cases {
        let o = run(&KEEPER, &keeper_args(&etcd, d, bad), None);
        assert_one_line_error(&o, flag);
    }

    let mut a = etcd.flags("cp", STORE_TIMEOUT);
    a.push("--tcp-keepalive-idle=-1".into());
    assert_one_line_error(&run(&PROXY, &a, None), "--tcp-keepalive-idle");
    let mut a = etcd.flags("cp", STORE_TIMEOUT);
    a.push("--port=99999".into());
    assert_one_line_error(&run(&PROXY, &a, None), "--port");

    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, r#"{"initMode":"new","pgHBA":["a\nb"]}"#).unwrap();
    let mut a = etcd.flags("cs", STORE_TIMEOUT);
    a.push(format!("--initial-cluster-spec={}", spec.display()));
    assert_one_line_error(&run(&SENTINEL, &a, None), "pgHBA");
    let mut a = etcd.flags("cs", STORE_TIMEOUT);
    a.push("--store-backend=consul".into());
    assert_one_line_error(&run(&SENTINEL, &a, None), "--store-backend");

    for backend in ["etcd", "etcdv2", "consul", "kubernetes", "bogus"] {
        let mut a = etcd.flags("cc", STORE_TIMEOUT);
        a.push(format!("--store-backend={backend}"));
        a.extend(args(&["init", "-y"]));
        assert_one_line_error(&run(&CTL, &a, None), "--store-backend");
    }
    assert_eq!(
        etcd.keys(""),
        Vec::<String>::new(),
        "nothing may be written"
    );
}

#[test]
fn bad_values_from_env_and_file_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(
        &file,
        "cluster_name = \"c\"\nstore-backend = \"etcdv3\"\ntcp-keepalive-count = -2\n",
    )
    .unwrap();
    let o = run(&PROXY, &args(&["--config", file.to_str().unwrap()]), None);
    assert_one_line_error(&o, "--tcp-keepalive-count");

    std::fs::write(&file, "cluster-name = \"c\"\nstore-backnd = \"etcdv3\"\n").unwrap();
    let o = run(&PROXY, &args(&["--config", file.to_str().unwrap()]), None);
    assert_one_line_error(&o, "store-backnd");

    let o = std::process::Command::new(&*CTL)
        .args(["status"])
        .env("STOLONCTL_CLUSTER_NAME", "c")
        .env("STOLONCTL_STORE_BACKEND", "etcdv3")
        .env("STOLONCTL_LOG_LEVEL", "chatty")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_one_line_error(&o, "--log-level");
}

#[test]
fn unknown_flags_and_missing_args_are_one_line() {
    assert_one_line_error(&run(&CTL, &args(&["status", "--bogus"]), None), "--bogus");
    assert_one_line_error(&run(&KEEPER, &args(&["--pg-prot=5432"]), None), "--pg-prot");
    assert_one_line_error(&run(&CTL, &args(&["failkeeper"]), None), "KEEPER_UID");
    assert_one_line_error(
        &run(&CTL, &args(&["status", "--format", "yaml"]), None),
        "yaml",
    );
}
