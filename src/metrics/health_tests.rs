//! The keeper's health checks: the decision from a view (`health.rs`), the lag parameter, the
//! board the keeper feeds (`board.rs`) and the answers on the wire (`http.rs`).

use super::board::{HealthBoard, boot_now};
use super::health::*;
use super::{Metrics, Routes, bind, serve};
use crate::cluster::{
    ClusterData, ClusterSpec, Db, DbRole, DbSpec, DbStatus, FollowConfig, FollowType,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const S: Duration = Duration::from_secs(1);
/// "Now" in the pure tests; every time in the views is before it.
const NOW: Duration = Duration::from_secs(1000);
const BOUND: Duration = Duration::from_secs(3);

fn look(db: &str, in_recovery: bool, x_log_pos: u64) -> Observation {
    Observation {
        at: NOW - S,
        db_uid: db.into(),
        accepting: true,
        in_recovery,
        timeline: 3,
        x_log_pos,
    }
}

fn assigned(db: &str, role: DbRole, elected: bool, follows: Follows) -> ClusterView {
    ClusterView {
        read_at: NOW - S,
        db: Some(AssignedDb {
            uid: db.into(),
            role,
            elected,
            follows,
        }),
        master_x_log_pos: Some(10_000),
    }
}

fn view(observed: Option<Observation>, clusterdata: Option<ClusterView>) -> KeeperView {
    KeeperView {
        cluster: "c1".into(),
        keeper_uid: "keeper0".into(),
        running: true,
        observed,
        clusterdata,
        published_at: Some(NOW - S),
        stale_after: BOUND,
        look_allowance: 2 * S,
    }
}

fn master() -> KeeperView {
    view(
        Some(look("m1", false, 10_000)),
        Some(assigned("m1", DbRole::Master, true, Follows::Nothing)),
    )
}

fn standby(x_log_pos: u64) -> KeeperView {
    view(
        Some(look("s1", true, x_log_pos)),
        Some(assigned("s1", DbRole::Standby, false, Follows::ClusterDb)),
    )
}

const REPLICA: Check = Check::Replica { max_lag: None };
const READ_ONLY: Check = Check::ReadOnly { max_lag: None };

/// The status of each check, in the order health, primary, replica, read-only.
fn codes(v: &KeeperView) -> [u16; 4] {
    [Check::Health, Check::Primary, REPLICA, READ_ONLY]
        .map(|c| if answer(c, v, NOW).ok { 200 } else { 503 })
}

fn json(a: &Answer) -> String {
    serde_json::to_string(&a.body).unwrap()
}

#[test]
fn the_elected_master_running_as_primary_is_primary_and_read_only() {
    let v = master();
    assert_eq!(codes(&v), [200, 200, 503, 200]);
    assert_eq!(
        json(&answer(Check::Primary, &v, NOW)),
        r#"{"state":"running","role":"master","in_recovery":false,"db_uid":"m1","timeline":3,"xlog_pos":10000,"cluster":"c1","keeper_uid":"keeper0"}"#
    );
}

#[test]
fn a_streaming_standby_is_replica_and_read_only_with_its_lag() {
    let v = standby(9_000);
    assert_eq!(codes(&v), [200, 503, 200, 200]);
    assert_eq!(
        json(&answer(REPLICA, &v, NOW)),
        r#"{"state":"running","role":"standby","in_recovery":true,"db_uid":"s1","timeline":3,"xlog_pos":9000,"lag":1000,"cluster":"c1","keeper_uid":"keeper0"}"#
    );
    let within = |max| answer(Check::Replica { max_lag: Some(max) }, &v, NOW).ok;
    assert!(within(1_000));
    assert!(!within(999));
    assert!(!answer(Check::ReadOnly { max_lag: Some(999) }, &v, NOW).ok);
    // A standby ahead of the master's last report lags 0.
    let ahead = standby(12_000);
    assert_eq!(answer(REPLICA, &ahead, NOW).body.lag, Some(Some(0)));
    assert!(answer(Check::Replica { max_lag: Some(0) }, &ahead, NOW).ok);
}

#[test]
fn a_master_that_stops_hearing_from_the_store_stops_being_primary() {
    let mut v = master();
    // The clusterdata read is as old as the bound: still fresh; a moment later, not.
    v.clusterdata.as_mut().unwrap().read_at = NOW - BOUND;
    assert!(answer(Check::Primary, &v, NOW).ok);
    v.clusterdata.as_mut().unwrap().read_at = NOW - BOUND - Duration::from_millis(1);
    assert_eq!(codes(&v), [200, 503, 503, 503]);

    // Reads work, publications do not (the fence deadline counts from them).
    let mut v = master();
    v.published_at = Some(NOW - BOUND - S);
    assert_eq!(codes(&v), [200, 503, 503, 503]);
    v.published_at = None;
    assert!(!answer(Check::Primary, &v, NOW).ok);
}

#[test]
fn only_the_elected_master_running_as_primary_is_primary() {
    // Deposed: the sentinel took the role away.
    let mut v = master();
    v.clusterdata = Some(assigned("m1", DbRole::Undefined, false, Follows::Nothing));
    assert_eq!(codes(&v), [200, 503, 503, 503]);
    assert_eq!(answer(Check::Primary, &v, NOW).body.role, RoleName::None);
    // Role master but another db elected.
    v.clusterdata = Some(assigned("m1", DbRole::Master, false, Follows::Nothing));
    assert!(!answer(Check::Primary, &v, NOW).ok);
    // Elected, still in recovery (the promotion is under way).
    let mut v = master();
    v.observed = Some(look("m1", true, 10_000));
    assert_eq!(codes(&v), [200, 503, 503, 503]);
    // PostgreSQL runs another db than the clusterdata's (a resync is coming).
    let mut v = master();
    v.observed = Some(look("old", false, 10_000));
    assert_eq!(codes(&v), [200, 503, 503, 503]);
    // No db at all.
    let mut v = master();
    v.clusterdata.as_mut().unwrap().db = None;
    assert_eq!(codes(&v), [200, 503, 503, 503]);
    assert_eq!(answer(Check::Health, &v, NOW).body.db_uid, Some("m1"));
}

#[test]
fn a_standby_keeps_serving_reads_without_the_store_but_not_a_lag_bound() {
    let mut v = standby(9_000);
    v.clusterdata.as_mut().unwrap().read_at = NOW - 10 * BOUND;
    v.published_at = None;
    assert_eq!(codes(&v), [200, 503, 200, 200]);
    let a = answer(
        Check::Replica {
            max_lag: Some(u64::MAX),
        },
        &v,
        NOW,
    );
    assert!(!a.ok, "the master's position is stale");
    assert_eq!(a.body.lag, Some(None));
}

#[test]
fn standbys_of_no_db_of_this_cluster_are_not_replicas() {
    // The followed db is gone from the clusterdata.
    let mut v = standby(9_000);
    v.clusterdata = Some(assigned("s1", DbRole::Standby, false, Follows::Nothing));
    assert_eq!(codes(&v), [200, 503, 503, 503]);
    // The head of a standby cluster follows a primary outside: read-only, not a replica, and
    // no lag against the outside primary can be told.
    let mut v = standby(9_000);
    v.clusterdata = Some(assigned("s1", DbRole::Standby, true, Follows::External));
    assert_eq!(codes(&v), [200, 503, 503, 200]);
    assert_eq!(answer(READ_ONLY, &v, NOW).body.lag, Some(None));
    assert!(answer(Check::ReadOnly { max_lag: Some(0) }, &v, NOW).ok);
}

#[test]
fn postgres_state_comes_from_a_recent_look_at_the_running_instance() {
    let mut v = master();
    v.running = false;
    let a = answer(Check::Health, &v, NOW);
    assert_eq!((a.ok, a.body.state), (false, PgState::Stopped));
    assert_eq!(codes(&v), [503; 4]);
    assert_eq!(
        (a.body.timeline, a.body.xlog_pos, a.body.in_recovery),
        (None, None, None)
    );

    let mut v = master();
    v.observed = None;
    assert_eq!(answer(Check::Health, &v, NOW).body.state, PgState::Starting);
    assert_eq!(codes(&v), [503; 4]);

    let mut v = master();
    v.observed.as_mut().unwrap().accepting = false;
    assert_eq!(answer(Check::Health, &v, NOW).body.state, PgState::Starting);
    assert_eq!(codes(&v), [503; 4]);

    // A look may be late by a publication that waited for the store...
    let mut v = master();
    v.observed.as_mut().unwrap().at = NOW - BOUND - 2 * S;
    assert_eq!(codes(&v), [200, 200, 503, 200]);
    // ...not more.
    v.observed.as_mut().unwrap().at = NOW - BOUND - 3 * S;
    let a = answer(Check::Health, &v, NOW);
    assert_eq!(a.body.state, PgState::Unknown);
    assert_eq!(a.body.xlog_pos, None);
    assert_eq!(codes(&v), [503; 4]);
}

#[test]
fn the_bound_is_three_sleep_intervals_and_never_past_the_fence() {
    assert_eq!(stale_after(5 * S, 19 * S), 15 * S);
    assert_eq!(stale_after(S, 3 * S), 3 * S);
    let fence = Duration::from_millis(1500);
    assert_eq!(stale_after(S, fence), fence);
}

#[test]
fn lag_takes_bytes_and_postgresql_units() {
    for (text, bytes) in [
        ("0", 0),
        ("1048576", 1_048_576),
        ("5B", 5),
        ("1kB", 1024),
        ("16MB", 16 << 20),
        ("16mb", 16 << 20),
        ("2 GB", 2 << 30),
        ("1TB", 1 << 40),
    ] {
        assert_eq!(parse_lag(text), Ok(bytes), "{text}");
    }
    for bad in ["", "MB", "-1", "1.5GB", "16XB", "1e6", "+1"] {
        assert_eq!(parse_lag(bad), Err(LagError::Invalid(bad.into())), "{bad}");
    }
    for huge in ["99999999999999999999", "16777216TB"] {
        assert_eq!(
            parse_lag(huge),
            Err(LagError::TooLarge(huge.into())),
            "{huge}"
        );
    }
    let e = parse_lag("16XB").unwrap_err().to_string();
    assert!(e.starts_with(r#"lag="16XB" is not a size"#), "{e}");
}

#[test]
fn paths_and_aliases_name_their_checks() {
    let lag = |max| Some(Ok(Check::Replica { max_lag: max }));
    assert_eq!(route("/health", None), Some(Ok(Check::Health)));
    assert_eq!(route("/health", Some("lag=x")), Some(Ok(Check::Health)));
    for primary in ["/primary", "/master", "/read-write"] {
        assert_eq!(route(primary, None), Some(Ok(Check::Primary)), "{primary}");
    }
    assert_eq!(route("/replica", None), lag(None));
    assert_eq!(route("/replica", Some("lag=16MB")), lag(Some(16 << 20)));
    assert_eq!(route("/replica", Some("tag_x=1&lag=1kB")), lag(Some(1024)));
    assert_eq!(
        route("/read-only", Some("lag=0")),
        Some(Ok(Check::ReadOnly { max_lag: Some(0) }))
    );
    assert_eq!(
        route("/replica", Some("lag=x")),
        Some(Err(LagError::Invalid("x".into())))
    );
    for other in ["/", "/metrics", "/primary/", "/healthz"] {
        assert_eq!(route(other, None), None, "{other}");
    }
}

fn db(uid: &str, keeper: &str, role: DbRole, follow: Option<FollowConfig>, pos: u64) -> Db {
    Db {
        uid: uid.into(),
        spec: DbSpec {
            keeper_uid: keeper.into(),
            role,
            follow_config: follow,
            ..Default::default()
        },
        status: DbStatus {
            x_log_pos: pos,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn cluster() -> ClusterData {
    let spec: ClusterSpec =
        serde_json::from_str(r#"{"sleepInterval":"1s","failInterval":"4s"}"#).unwrap();
    let mut cd = ClusterData::new("uid".into(), spec, chrono::Utc::now());
    cd.cluster.status.master = Some("m1".into());
    let follow = |db: &str| {
        Some(FollowConfig {
            follow_type: FollowType::Internal,
            db_uid: db.into(),
            ..Default::default()
        })
    };
    for d in [
        db("m1", "keeper0", DbRole::Master, None, 5_000),
        db("s1", "keeper1", DbRole::Standby, follow("m1"), 4_000),
        db("s2", "keeper2", DbRole::Standby, follow("gone"), 0),
    ] {
        cd.dbs.insert(d.uid.clone(), d);
    }
    cd
}

/// A keeper's board, fed by [`feed`].
fn board_of(keeper: &str, db: &str, in_recovery: bool) -> HealthBoard {
    let board = HealthBoard::default();
    board.enable("c1");
    feed(&board, keeper, db, in_recovery);
    board
}

/// What a keeper whose PostgreSQL runs `db` tells its board.
fn feed(board: &HealthBoard, keeper: &str, db: &str, in_recovery: bool) {
    board.publisher(&keeper.into(), 2 * S);
    board.postgres_running(true);
    let mut seen = look(db, in_recovery, 4_500);
    seen.at = boot_now();
    board.observed(board.instance(), seen);
    board.published(boot_now());
    board.read_clusterdata(&cluster(), &keeper.into());
}

fn status(board: &HealthBoard, check: Check) -> u16 {
    match board.answer(check) {
        Some((true, _)) => 200,
        Some((false, _)) => 503,
        None => 404,
    }
}

#[test]
fn the_board_reads_the_clusterdata_for_its_keeper() {
    let m = board_of("keeper0", "m1", false);
    let v = m.view().unwrap();
    let cd = v.clusterdata.as_ref().unwrap();
    assert_eq!(
        cd.db,
        Some(AssignedDb {
            uid: "m1".into(),
            role: DbRole::Master,
            elected: true,
            follows: Follows::Nothing
        })
    );
    assert_eq!(cd.master_x_log_pos, Some(5_000));
    // 3 × sleepInterval 1s, under the fence deadline of failInterval 4s less 1s.
    assert_eq!(v.stale_after, 3 * S);
    assert_eq!(status(&m, Check::Primary), 200);

    let s = board_of("keeper1", "s1", true);
    let follows = |b: &HealthBoard| b.view().unwrap().clusterdata.unwrap().db.unwrap().follows;
    assert_eq!(follows(&s), Follows::ClusterDb);
    assert_eq!(status(&s, Check::Replica { max_lag: Some(500) }), 200);
    assert_eq!(status(&s, Check::Replica { max_lag: Some(499) }), 503);
    assert_eq!(status(&s, Check::Primary), 503);
    assert_eq!(follows(&board_of("keeper2", "s2", true)), Follows::Nothing);
    let (_, body) = s.answer(REPLICA).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["lag"], 500);
    assert_eq!(body["keeper_uid"], "keeper1");
}

#[test]
fn a_start_or_stop_forgets_the_last_look() {
    let m = board_of("keeper0", "m1", false);
    let before = m.instance();
    m.postgres_running(false);
    assert_eq!(status(&m, Check::Health), 503);
    m.postgres_running(true);
    assert_eq!(m.view().unwrap().observed, None, "about the old instance");
    // A look started before the restart is dropped.
    m.observed(before, look("m1", false, 1));
    assert_eq!(status(&m, Check::Health), 503);
    let mut seen = look("m1", false, 1);
    seen.at = boot_now();
    m.observed(m.instance(), seen);
    assert_eq!(status(&m, Check::Health), 200);
    // The same state again changes nothing.
    m.postgres_running(true);
    assert_eq!(status(&m, Check::Health), 200);
}

#[test]
fn only_a_keeper_has_a_board() {
    let board = HealthBoard::default();
    assert_eq!(status(&board, Check::Health), 404);
    board.postgres_running(true);
    assert!(board.view().is_none());
}

/// One raw HTTP/1.1 request (connection closed after it); the raw answer.
async fn request(addr: std::net::SocketAddr, line: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn split(answer: &str) -> (&str, &str) {
    answer.split_once("\r\n\r\n").unwrap_or((answer, ""))
}

#[tokio::test]
async fn the_endpoints_answer_json_and_head_and_options_without_a_body() {
    let reg = Metrics::new();
    // The keeper's board is the registry's.
    feed(&reg.keeper("c1").health(), "keeper0", "m1", false);

    let stop = tokio_util::sync::CancellationToken::new();
    let mut addrs = Vec::new();
    for metrics in [true, false] {
        let l = bind("api-listen-address", "127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        let routes = Routes {
            metrics,
            health: true,
        };
        tokio::spawn(serve(l, reg.clone(), routes, stop.clone()));
    }
    let (both, api) = (addrs[0], addrs[1]);

    let ok = request(api, "GET /primary").await;
    let (head, body) = split(&ok);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{ok}"
    );
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["role"], "master");
    assert_eq!(body["db_uid"], "m1");

    let unavailable = request(both, "GET /replica").await;
    let (head, body) = split(&unavailable);
    assert!(
        head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{head}"
    );
    assert!(body.contains(r#""state":"running""#), "{body}");

    for method in ["HEAD", "OPTIONS"] {
        let answer = request(api, &format!("{method} /master")).await;
        let (head, body) = split(&answer);
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n"),
            "{method}: {answer}"
        );
        assert_eq!(body, "", "{method}");
    }
    let refused = request(api, "POST /primary").await;
    assert!(refused.starts_with("HTTP/1.1 405 "), "{refused}");
    let bad = request(api, "GET /replica?lag=lots").await;
    assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{bad}");
    assert!(
        bad.contains(r#"{"error":"lag=\"lots\" is not a size"#),
        "{bad}"
    );

    // The API listener serves no metrics; the metrics one serves both.
    assert!(
        request(api, "GET /metrics")
            .await
            .starts_with("HTTP/1.1 404 ")
    );
    assert!(
        request(both, "GET /metrics")
            .await
            .starts_with("HTTP/1.1 200 ")
    );
    assert!(request(both, "GET /").await.starts_with("HTTP/1.1 404 "));
    stop.cancel();
}

#[test]
fn every_body_field_is_documented() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Health checks for load balancers")
        .nth(1)
        .expect("README.md has the health checks section");
    let body = serde_json::to_value(answer(REPLICA, &standby(1), NOW).body).unwrap();
    for field in body.as_object().unwrap().keys() {
        assert!(section.contains(&format!("`{field}`")), "{field}");
    }
}
