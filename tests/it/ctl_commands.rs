//! stolonctl sub-commands against a real etcd.

use crate::support;

use serde_json::Value;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::Etcd;
use support::cli::{STORE_TIMEOUT, args, assert_one_line_error, run, stderr, stdout};

use support::CTL;

fn ctl(etcd: &Etcd, cluster: &str, rest: &[&str], stdin: Option<&str>) -> Output {
    let mut a = etcd.flags(cluster, STORE_TIMEOUT);
    a.extend(args(rest));
    run(&CTL, &a, stdin)
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    stdout(&o)
}

fn stored(etcd: &Etcd, cluster: &str) -> Value {
    serde_json::from_str(&etcd.cluster_data(cluster).expect("clusterdata")).unwrap()
}

/// A cluster with master db d1 on keeper k1 and standby d2 on k2 following it.
const CLUSTER_DATA: &str = r#"{
  "formatVersion": 1,
  "changeTime": "2024-01-01T00:00:00Z",
  "cluster": {"uid": "c0ffee00", "generation": 1, "changeTime": "2024-01-01T00:00:00Z",
    "spec": {"initMode": "new", "sleepInterval": "2s"},
    "status": {"currentGeneration": 1, "phase": "normal", "master": "d1"}},
  "keepers": {
    "k1": {"uid": "k1", "generation": 1, "changeTime": "2024-01-01T00:00:00Z", "spec": {},
           "status": {"healthy": true, "lastHealthyTime": "2024-01-01T00:00:00Z"}},
    "k2": {"uid": "k2", "generation": 1, "changeTime": "2024-01-01T00:00:00Z", "spec": {},
           "status": {"healthy": true, "lastHealthyTime": "2024-01-01T00:00:00Z"}}
  },
  "dbs": {
    "d1": {"uid": "d1", "generation": 3, "changeTime": "2024-01-01T00:00:00Z",
           "spec": {"keeperUID": "k1", "role": "master", "followers": ["d2"]},
           "status": {"healthy": true, "currentGeneration": 3, "listenAddress": "127.0.0.1", "port": "5432"}},
    "d2": {"uid": "d2", "generation": 2, "changeTime": "2024-01-01T00:00:00Z",
           "spec": {"keeperUID": "k2", "role": "standby",
                    "followConfig": {"type": "internal", "dbuid": "d1"}},
           "status": {"healthy": false, "currentGeneration": 1}}
  },
  "proxy": {"generation": 4, "changeTime": "2024-01-01T00:00:00Z",
            "spec": {"masterDbUid": "d1", "enabledProxies": ["p1"]}, "status": {}}
}"#;

#[test]
fn init_confirms_then_replaces() {
    let etcd = Etcd::start();
    let out = ok(ctl(&etcd, "c", &["init", "-y"], None));
    assert!(
        !out.contains("current cluster data will be removed"),
        "{out}"
    );
    let cd = stored(&etcd, "c");
    assert_eq!(cd["formatVersion"], 1);
    assert_eq!(cd["cluster"]["status"]["phase"], "initializing");
    assert_eq!(cd["cluster"]["spec"]["initMode"], "new");
    let uid = cd["cluster"]["uid"].as_str().unwrap().to_string();
    assert_eq!(uid.len(), 8);

    // "no" keeps the data; anything but yes/no asks again.
    let out = ok(ctl(
        &etcd,
        "c",
        &["init", r#"{"initMode":"new","sleepInterval":"3s"}"#],
        Some("maybe\nno\n"),
    ));
    assert!(
        out.contains("WARNING: The current cluster data will be removed"),
        "{out}"
    );
    assert!(out.contains("Please enter 'yes' or 'no'"), "{out}");
    assert!(out.contains("exiting"), "{out}");
    assert_eq!(stored(&etcd, "c")["cluster"]["uid"], uid.as_str());

    ok(ctl(
        &etcd,
        "c",
        &["init", r#"{"initMode":"new","sleepInterval":"3s"}"#],
        Some("yes\n"),
    ));
    let cd = stored(&etcd, "c");
    assert_ne!(cd["cluster"]["uid"], uid.as_str(), "a brand new cluster");
    assert_eq!(cd["cluster"]["spec"]["sleepInterval"], "3s");

    // No answer at all is an error, not a silent yes.
    assert_one_line_error(&ctl(&etcd, "c", &["init"], None), "--yes");

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("spec.json");
    std::fs::write(&f, r#"{"initMode":"new","failInterval":"11s"}"#).unwrap();
    ok(ctl(
        &etcd,
        "c",
        &["init", "-y", "-f", f.to_str().unwrap()],
        None,
    ));
    assert_eq!(stored(&etcd, "c")["cluster"]["spec"]["failInterval"], "11s");
}

#[test]
fn spec_update_and_defaults() {
    let etcd = Etcd::start();
    assert_one_line_error(&ctl(&etcd, "c", &["spec"], None), "stolonctl init");
    ok(ctl(
        &etcd,
        "c",
        &["init", "-y", r#"{"initMode":"new","sleepInterval":"2s"}"#],
        None,
    ));

    let spec: Value = serde_json::from_str(&ok(ctl(&etcd, "c", &["spec"], None))).unwrap();
    assert_eq!(spec["sleepInterval"], "2s");
    assert!(
        spec.get("failInterval").is_none(),
        "only set fields: {spec}"
    );

    let d: Value =
        serde_json::from_str(&ok(ctl(&etcd, "c", &["spec", "--defaults"], None))).unwrap();
    assert_eq!(d["sleepInterval"], "2s");
    assert_eq!(d["failInterval"], "20s");
    assert_eq!(d["maxStandbyLag"], 1_232_896);
    assert_eq!(d["maxStandbys"], 20);
    assert_eq!(d["role"], "master");

    ok(ctl(
        &etcd,
        "c",
        &[
            "update",
            "--patch",
            r#"{"failInterval":"7s","pgParameters":{"work_mem":"8MB"}}"#,
        ],
        None,
    ));
    let s = &stored(&etcd, "c")["cluster"]["spec"];
    assert_eq!(
        s["sleepInterval"], "2s",
        "patch keeps what it does not mention"
    );
    assert_eq!(s["failInterval"], "7s");
    assert_eq!(s["pgParameters"]["work_mem"], "8MB");

    ok(ctl(
        &etcd,
        "c",
        &["update", "-p", r#"{"pgParameters":{"work_mem":null}}"#],
        None,
    ));
    assert!(
        stored(&etcd, "c")["cluster"]["spec"]["pgParameters"]
            .get("work_mem")
            .is_none()
    );

    let mut a = etcd.flags("c", STORE_TIMEOUT);
    a.extend(args(&["update", "-f", "-"]));
    ok(run(&CTL, &a, Some(r#"{"initMode":"new","maxStandbys":4}"#)));
    let s = &stored(&etcd, "c")["cluster"]["spec"];
    assert_eq!(s["maxStandbys"], 4);
    assert!(s.get("sleepInterval").is_none(), "full replacement: {s}");
}

#[test]
fn clusterdata_read_write_failkeeper_removekeeper_status() {
    let etcd = Etcd::start();
    let out = ok(ctl(
        &etcd,
        "c",
        &["clusterdata", "write"],
        Some(CLUSTER_DATA),
    ));
    assert!(
        out.contains("successfully wrote cluster data into the new store"),
        "{out}"
    );
    assert_one_line_error(
        &ctl(&etcd, "c", &["clusterdata", "write"], Some(CLUSTER_DATA)),
        "--yes",
    );
    ok(ctl(
        &etcd,
        "c",
        &["clusterdata", "write", "-y"],
        Some(CLUSTER_DATA),
    ));

    let raw = ok(ctl(&etcd, "c", &["clusterdata", "read"], None));
    assert_eq!(raw.trim_end(), etcd.cluster_data("c").unwrap());
    // The bytes given are what is stored: a field this version does not know survives.
    let with_unknown = CLUSTER_DATA.replacen("{", r#"{"fromANewerVersion": {"x": 1},"#, 1);
    ok(ctl(
        &etcd,
        "c",
        &["clusterdata", "write", "-y"],
        Some(&with_unknown),
    ));
    assert_eq!(etcd.cluster_data("c").unwrap(), with_unknown.trim_end());
    ok(ctl(
        &etcd,
        "c",
        &["clusterdata", "write", "-y"],
        Some(CLUSTER_DATA),
    ));
    let pretty: Value = serde_json::from_str(&ok(ctl(
        &etcd,
        "c",
        &["clusterdata", "read", "--pretty"],
        None,
    )))
    .unwrap();
    assert_eq!(pretty, stored(&etcd, "c"));
    assert_eq!(pretty["dbs"]["d1"]["spec"]["followers"][0], "d2");

    // Status: infos as the daemons publish them, and a leader elected the etcd way.
    etcd.put("stolon/cluster/c/sentinels/info/s1", r#"{"UID":"s1"}"#);
    etcd.put("stolon/cluster/c/sentinels/info/s2", r#"{"UID":"s2"}"#);
    etcd.put(
        "stolon/cluster/c/proxies/info/p1",
        r#"{"UID":"p1","Generation":4,"ProxyTimeout":15000000000}"#,
    );
    let _leader = Elect::start(&etcd, "stolon/cluster/c/sentinel-leader", "s2");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let s: Value =
            serde_json::from_str(&ok(ctl(&etcd, "c", &["status", "--format", "json"], None)))
                .unwrap();
        if s["sentinels"][1]["leader"] == true {
            break s;
        }
        assert!(Instant::now() < deadline, "leader never seen: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        status,
        serde_json::json!({
            "sentinels": [{"uid": "s1", "leader": false}, {"uid": "s2", "leader": true}],
            "proxies": [{"uid": "p1", "generation": 4, "read_only": false}],
            "keepers": [
                {"uid": "k1", "listen_address": "127.0.0.1:5432", "healthy": true, "pg_healthy": true,
                 "pg_wanted_generation": 3, "pg_current_generation": 3, "priority": 1},
                {"uid": "k2", "listen_address": "(unknown)", "healthy": true, "pg_healthy": false,
                 "pg_wanted_generation": 2, "pg_current_generation": 1, "priority": 1}
            ],
            "cluster": {"available": true, "master_keeper_uid": "k1", "master_db_uid": "d1",
                        "paused": false}
        })
    );
    let text = ok(ctl(&etcd, "c", &["status"], None));
    for section in [
        "=== Active sentinels ===",
        "=== Active proxies ===",
        "=== Keepers ===",
        "=== Cluster Info ===",
        "Master Keeper: k1",
        "===== Keepers/DB tree =====",
        "k1 (master)\n└─k2\n",
    ] {
        assert!(text.contains(section), "{section:?} missing in:\n{text}");
    }

    assert_one_line_error(
        &ctl(&etcd, "c", &["failkeeper", "nope"], None),
        "keeper \"nope\" does not exist",
    );
    ok(ctl(&etcd, "c", &["failkeeper", "k2"], None));
    let cd = stored(&etcd, "c");
    assert_eq!(cd["keepers"]["k2"]["status"]["forceFail"], true);
    assert!(cd["keepers"]["k1"]["status"].get("forceFail").is_none());

    let before = etcd.cluster_data("c");
    let o = ctl(&etcd, "c", &["removekeeper", "k1"], None);
    assert_one_line_error(&o, "keeper assigned db is the current cluster master db.");
    assert_eq!(etcd.cluster_data("c"), before, "refused: unchanged");
    ok(ctl(&etcd, "c", &["removekeeper", "k2"], None));
    let cd = stored(&etcd, "c");
    assert!(cd["keepers"].get("k2").is_none());
    assert!(cd["dbs"].get("d2").is_none());
    assert!(cd["dbs"].get("d1").is_some());
    // The tree skips the follower that no longer exists.
    let text = ok(ctl(&etcd, "c", &["status"], None));
    assert!(text.contains("k1 (master)\n\n"), "{text}");
}

#[test]
fn flags_beat_env_beat_file() {
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stolonctl.toml");
    std::fs::write(
        &file,
        format!(
            "cluster_name = \"fromfile\"\nstore-backend = \"etcdv3\"\nstore-endpoints = \"{}\"\n",
            etcd.endpoint()
        ),
    )
    .unwrap();
    let ctl_env = |env: &[(&str, &str)], extra: &[&str]| {
        let mut cmd = Command::new(&*CTL);
        cmd.args(["--config", file.to_str().unwrap()])
            .args(extra)
            .args(["init", "-y"])
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    ok(ctl_env(&[], &[]));
    assert!(etcd.cluster_data("fromfile").is_some());
    ok(ctl_env(&[("STOLONCTL_CLUSTER_NAME", "fromenv")], &[]));
    assert!(etcd.cluster_data("fromenv").is_some());
    ok(ctl_env(
        &[("STOLONCTL_CLUSTER_NAME", "fromenv2")],
        &["--cluster-name", "fromflag"],
    ));
    assert!(etcd.cluster_data("fromflag").is_some());
    assert!(etcd.cluster_data("fromenv2").is_none());
    // Sub-command flags are not read from the environment (as upstream).
    let o = ctl_env(
        &[
            ("STOLONCTL_YES", "false"),
            ("STOLONCTL_FILE", "/nonexistent"),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `etcdctl elect` holds a leadership the way an etcd v3 sentinel does, until dropped.
struct Elect(Child);

impl Elect {
    fn start(etcd: &Etcd, name: &str, value: &str) -> Elect {
        Elect(
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &etcd.endpoint(), "elect", name, value])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Elect {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A write etcd never answers (frozen) may still be applied when it wakes: stolonctl says the
/// outcome is unknown instead of reporting a failure.
#[test]
fn a_write_to_a_frozen_store_reports_an_unknown_outcome() {
    let etcd = Etcd::start();
    etcd.signal(nix::sys::signal::Signal::SIGSTOP);
    let out = ctl(
        &etcd,
        "c",
        &["clusterdata", "write", "-y"],
        Some(CLUSTER_DATA),
    );
    etcd.signal(nix::sys::signal::Signal::SIGCONT);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("may or may not have been applied"), "{err}");
}
