use super::*;

/// Clusterdata as upstream stolon v0.17 writes it (nil slices as null, Go zero times, the
/// "systemdID" key, capitalised postgresBinaryVersion), plus a field we do not know.
const UPSTREAM_CLUSTERDATA: &str = r#"{
 "formatVersion": 1,
 "changeTime": "2023-05-02T10:11:12.123456789Z",
 "cluster": {
  "uid": "0c7bd7a4", "generation": 1, "changeTime": "2023-05-02T10:00:00Z",
  "spec": {"sleepInterval": "5s", "additionalWalSenders": null, "additionalMasterReplicationSlots": null,
           "initMode": "new", "pgParameters": {"max_connections": "100"}, "pgHBA": null, "automaticPgRestart": null},
  "status": {"currentGeneration": 1, "phase": "normal", "master": "a9d1b1f0"}
 },
 "keepers": {
  "keeper0": {"uid": "keeper0", "generation": 1, "changeTime": "0001-01-01T00:00:00Z", "spec": {},
   "status": {"healthy": true, "lastHealthyTime": "2023-05-02T10:11:10.5Z", "bootUUID": "7b0e4a0e-1111-2222-3333-444455556666",
              "postgresBinaryVersion": {"Maj": 15, "Min": 3}, "canBeMaster": true}}
 },
 "dbs": {
  "a9d1b1f0": {"uid": "a9d1b1f0", "generation": 2, "changeTime": "2023-05-02T10:01:00Z",
   "spec": {"keeperUID": "keeper0", "requestTimeout": "10s", "maxStandbys": 20, "additionalWalSenders": 5,
            "additionalReplicationSlots": null, "initMode": "none", "pgHBA": null, "role": "master",
            "followers": [], "synchronousStandbys": null, "externalSynchronousStandbys": null},
   "status": {"healthy": true, "currentGeneration": 2, "listenAddress": "10.0.0.1", "port": "5432",
              "systemdID": "7227812741349015123", "timelineID": 1, "xLogPos": 50331920,
              "timelinesHistory": null, "synchronousStandbys": null, "olderWalFile": "000000010000000000000001",
              "somethingNew": true}}
 },
 "proxy": {"uid": "e3b3a2c1", "generation": 3, "changeTime": "2023-05-02T10:01:00Z",
           "spec": {"masterDbUid": "a9d1b1f0", "enabledProxies": ["p1"]}, "status": {}}
}"#;

#[test]
fn loads_upstream_clusterdata() {
    let cd = ClusterData::from_json(UPSTREAM_CLUSTERDATA.as_bytes()).unwrap();
    assert_eq!(cd.cluster.status.phase, ClusterPhase::Normal);
    let db = &cd.dbs[&DbUid::from("a9d1b1f0")];
    assert_eq!(db.status.system_id, "7227812741349015123");
    assert_eq!(db.spec.role, DbRole::Master);
    assert_eq!(db.spec.request_timeout, GoDuration::from_secs(10));
    assert_eq!(
        cd.keepers[&KeeperUid::from("keeper0")]
            .status
            .postgres_binary_version
            .maj,
        15
    );
    assert_eq!(cd.proxy.spec.master_db_uid, "a9d1b1f0");
    assert_eq!(
        cd.master_keeper_uid().map(KeeperUid::as_str),
        Some("keeper0")
    );
}

#[test]
fn round_trip_is_stable() {
    let cd = ClusterData::from_json(UPSTREAM_CLUSTERDATA.as_bytes()).unwrap();
    let again = ClusterData::from_json(&cd.to_json()).unwrap();
    assert_eq!(cd, again);
    let text = String::from_utf8(cd.to_json()).unwrap();
    assert!(text.contains("\"systemdID\""));
    assert!(text.contains("\"Maj\":15"));
}

#[test]
fn no_master_is_an_absent_key_and_an_empty_one_reads_as_none() {
    let mut cd = ClusterData::from_json(UPSTREAM_CLUSTERDATA.as_bytes()).unwrap();
    assert_eq!(
        cd.cluster.status.master.as_ref().map(DbUid::as_str),
        Some("a9d1b1f0")
    );
    cd.cluster.status.master = None;
    let text = String::from_utf8(cd.to_json()).unwrap();
    assert!(!text.contains("\"master\":"), "{text}");
    let empty = UPSTREAM_CLUSTERDATA.replace("\"master\": \"a9d1b1f0\"", "\"master\": \"\"");
    let cd = ClusterData::from_json(empty.as_bytes()).unwrap();
    assert_eq!(cd.cluster.status.master, None);
    assert!(cd.master_db().is_none());
}

#[test]
fn rejects_other_format_versions() {
    let text = UPSTREAM_CLUSTERDATA.replace("\"formatVersion\": 1", "\"formatVersion\": 2");
    assert!(matches!(
        ClusterData::from_json(text.as_bytes()),
        Err(ClusterDataError::FormatVersion(2))
    ));
}

#[test]
fn rejects_invalid_stored_spec() {
    let text =
        UPSTREAM_CLUSTERDATA.replace("\"sleepInterval\": \"5s\"", "\"sleepInterval\": \"-5s\"");
    assert!(matches!(
        ClusterData::from_json(text.as_bytes()),
        Err(ClusterDataError::Spec(_))
    ));
}

#[test]
fn new_uids_are_8_hex() {
    let uid = new_uid();
    assert_eq!(uid.len(), 8);
    assert!(uid.chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn keeper_info_upstream_shape() {
    let text = r#"{"infoUID":"x","uid":"k1","clusterUID":"c","bootUUID":"b","postgresBinaryVersion":{"Maj":15,"Min":0},
      "postgresState":{"uid":"d1","generation":3,"listenAddress":"127.0.0.1","port":"5432","healthy":true,
      "systemID":"1","timelineID":2,"xLogPos":100,"timelinesHistory":[{"timelineID":1,"switchPoint":90,"reason":"no recovery target specified"}],
      "pgParameters":null,"synchronousStandbys":null},"canBeMaster":false}"#;
    let ki: KeeperInfo = serde_json::from_str(text).unwrap();
    assert_eq!(ki.can_be_master, Some(false));
    let ps = ki.postgres_state.unwrap();
    assert_eq!(ps.timelines_history[0].switch_point, 90);
    let pi: ProxyInfo = serde_json::from_str(
        r#"{"infoUID":"i","UID":"p1","Generation":4,"ProxyTimeout":15000000000}"#,
    )
    .unwrap();
    assert_eq!(pi.proxy_timeout_ns, 15_000_000_000);
    // Our readOnly marker: absent from a proxy without a read-only listener, as upstream.
    assert!(!pi.read_only);
    assert!(!serde_json::to_string(&pi).unwrap().contains("readOnly"));
    let ro = ProxyInfo {
        read_only: true,
        ..pi
    };
    let text = serde_json::to_string(&ro).unwrap();
    assert!(text.contains(r#""readOnly":true"#), "{text}");
    assert_eq!(serde_json::from_str::<ProxyInfo>(&text).unwrap(), ro);
}
