//! The rendered text: upstream's names, types and labels exactly, ours as documented in
//! README.md, and the endpoint's answers.

use super::*;
use crate::cluster::{ClusterData, ClusterSpec, Db, DbRole, DbSpec, DbStatus};
use crate::store::LastContact;
use std::collections::BTreeSet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The value of the sample line `series` (name and labels exactly as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Every `# TYPE` line: (name, type).
fn types(text: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.strip_prefix("# TYPE ")?.split(' ');
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

fn expect_types(text: &str, expected: &[(&str, &str)]) {
    let expected: BTreeSet<(String, String)> = expected
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    assert_eq!(types(text), expected, "in:\n{text}");
}

fn render(m: &Metrics) -> String {
    m.render().unwrap()
}

#[test]
fn keeper_exposes_upstreams_metrics_and_fencing() {
    let reg = Metrics::new();
    let k = reg.keeper("c1");
    let text = render(&reg);
    expect_types(
        &text,
        &[
            ("stolon_cluster_identifier", "gauge"),
            (
                "stolon_keeper_clusterdata_last_valid_update_seconds",
                "gauge",
            ),
            ("stolon_keeper_target_role", "gauge"),
            ("stolon_keeper_local_role", "gauge"),
            ("stolon_keeper_needs_reload", "gauge"),
            ("stolon_keeper_needs_restart", "gauge"),
            ("stolon_keeper_last_sync_success_seconds", "gauge"),
            ("stolon_keeper_sleep_interval", "gauge"),
            ("stolon_keeper_shutdown_seconds", "gauge"),
            ("stolon_keeper_fencing_events_total", "counter"),
        ],
    );
    assert!(text.contains("# HELP stolon_keeper_target_role Keeper last requested target role"));
    let id = r#"stolon_cluster_identifier{cluster_name="c1",component="keeper"}"#;
    assert_eq!(value(&text, id), Some(1.0));
    // Every role series is there from the start, at 0, as upstream.
    for role in ["undefined", "master", "standby"] {
        for m in ["target", "local"] {
            let series = format!("stolon_keeper_{m}_role{{role=\"{role}\"}}");
            assert_eq!(value(&text, &series), Some(0.0), "{series}");
        }
    }

    k.roles(PgRole::Standby, Some(DbRole::Master.into()));
    k.needs_reload(true);
    k.sleep_interval(Duration::from_millis(2500));
    k.fenced();
    k.valid_clusterdata(&cluster(None, Vec::new()), &"k1".into());
    let text = render(&reg);
    assert_eq!(
        value(&text, r#"stolon_keeper_local_role{role="standby"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&text, r#"stolon_keeper_local_role{role="master"}"#),
        Some(0.0)
    );
    assert_eq!(
        value(&text, r#"stolon_keeper_target_role{role="master"}"#),
        Some(1.0)
    );
    assert_eq!(value(&text, "stolon_keeper_needs_reload"), Some(1.0));
    assert_eq!(value(&text, "stolon_keeper_sleep_interval"), Some(2.5));
    assert_eq!(
        value(&text, "stolon_keeper_fencing_events_total"),
        Some(1.0)
    );
    let updated = value(&text, "stolon_keeper_clusterdata_last_valid_update_seconds");
    assert!(
        updated.is_some_and(|t| (t - unix_now()).abs() < 60.0),
        "{updated:?}"
    );

    // No db assigned: no target role.
    k.roles(PgRole::Undefined, None);
    let text = render(&reg);
    assert_eq!(
        value(&text, r#"stolon_keeper_target_role{role="master"}"#),
        Some(0.0)
    );
    assert_eq!(
        value(&text, r#"stolon_keeper_local_role{role="undefined"}"#),
        Some(1.0)
    );
}

fn db(uid: &str, keeper: &str, role: DbRole, x_log_pos: u64) -> Db {
    Db {
        uid: uid.into(),
        spec: DbSpec {
            keeper_uid: keeper.into(),
            role,
            ..Default::default()
        },
        status: DbStatus {
            x_log_pos,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn cluster(master: Option<&str>, dbs: Vec<Db>) -> ClusterData {
    let mut cd = ClusterData::new("c".into(), ClusterSpec::default(), chrono::Utc::now());
    cd.cluster.status.master = master.map(Into::into);
    cd.dbs = dbs.into_iter().map(|d| (d.uid.clone(), d)).collect();
    cd
}

#[test]
fn standby_lag_is_the_masters_position_less_the_standbys() {
    let cd = cluster(
        Some("m"),
        vec![
            db("m", "k1", DbRole::Master, 10_000),
            db("s1", "k2", DbRole::Standby, 9_000),
            db("s2", "k3", DbRole::Standby, 12_000),
            db("x", "k4", DbRole::Undefined, 0),
        ],
    );
    let lags = standby_lags(&cd);
    let bytes: Vec<(&str, &str, u64)> = lags
        .iter()
        .map(|l| (l.keeper.as_str(), l.db.as_str(), l.bytes))
        .collect();
    assert_eq!(bytes, vec![("k2", "s1", 1_000), ("k3", "s2", 0)]);
    assert!(standby_lags(&cluster(None, cd.dbs.values().cloned().collect())).is_empty());
}

#[test]
fn sentinel_exposes_upstreams_metrics_failovers_and_lag() {
    let reg = Metrics::new();
    let s = reg.sentinel("c1");
    let text = render(&reg);
    expect_types(
        &text,
        &[
            ("stolon_cluster_identifier", "gauge"),
            (
                "stolon_sentinel_last_cluster_check_success_seconds",
                "gauge",
            ),
            ("stolon_sentinel_is_leader", "gauge"),
            ("stolon_sentinel_leader_count", "gauge"),
            ("stolon_sentinel_failovers_total", "counter"),
        ],
    );
    assert_eq!(value(&text, "stolon_sentinel_is_leader"), Some(0.0));

    s.leadership(true);
    s.leadership(false);
    s.leadership(true);
    s.failover();
    s.check_succeeded();
    let cd = cluster(
        Some("m"),
        vec![
            db("m", "k1", DbRole::Master, 500),
            db("s1", "k2", DbRole::Standby, 200),
        ],
    );
    s.standby_lags(&cd);
    let text = render(&reg);
    assert_eq!(value(&text, "stolon_sentinel_is_leader"), Some(1.0));
    assert_eq!(value(&text, "stolon_sentinel_leader_count"), Some(2.0));
    assert_eq!(value(&text, "stolon_sentinel_failovers_total"), Some(1.0));
    // An empty family is not rendered at all; with a standby it is.
    assert!(
        text.contains("# TYPE stolon_sentinel_standby_lag_bytes gauge"),
        "{text}"
    );
    let lag = r#"stolon_sentinel_standby_lag_bytes{keeper="k2",db="s1"}"#;
    assert_eq!(value(&text, lag), Some(300.0));
    assert!(
        value(&text, "stolon_sentinel_last_cluster_check_success_seconds").is_some_and(|t| t > 0.0)
    );

    // A follower reports no lag: the leader does.
    s.leadership(false);
    assert_eq!(value(&render(&reg), lag), None);
}

#[test]
fn proxy_counts_sessions_dial_errors_and_refusals() {
    let reg = Metrics::new();
    let p = reg.proxy("c1");
    let text = render(&reg);
    expect_types(
        &text,
        &[
            ("stolon_cluster_identifier", "gauge"),
            ("stolon_proxy_sessions_active", "gauge"),
            ("stolon_proxy_sessions_total", "counter"),
            ("stolon_proxy_master_connect_errors_total", "counter"),
            ("stolon_proxy_clients_refused_total", "counter"),
            ("stolon_proxy_clients_held_total", "counter"),
            ("stolon_proxy_read_only_sessions_active", "gauge"),
            ("stolon_proxy_read_only_sessions_total", "counter"),
            ("stolon_proxy_read_only_connect_errors_total", "counter"),
            ("stolon_proxy_kernel_forwarded_sessions_total", "counter"),
        ],
    );
    let id = r#"stolon_cluster_identifier{cluster_name="c1",component="proxy"}"#;
    assert_eq!(value(&text, id), Some(1.0));
    let no_master = r#"stolon_proxy_clients_refused_total{reason="no_master"}"#;
    let limit = r#"stolon_proxy_clients_refused_total{reason="max_connections"}"#;
    assert_eq!(value(&text, no_master), Some(0.0));
    assert_eq!(value(&text, limit), Some(0.0));

    let a = p.session_started();
    let b = p.clone().session_started();
    p.connect_error();
    p.refused(Refusal::NoMaster);
    p.refused(Refusal::NoMaster);
    p.refused(Refusal::MaxConnections);
    p.held();
    p.refused(Refusal::HoldTimeout);
    p.kernel_forwarded();
    let text = render(&reg);
    assert_eq!(value(&text, "stolon_proxy_sessions_active"), Some(2.0));
    assert_eq!(value(&text, "stolon_proxy_sessions_total"), Some(2.0));
    assert_eq!(
        value(&text, "stolon_proxy_master_connect_errors_total"),
        Some(1.0)
    );
    assert_eq!(value(&text, no_master), Some(2.0));
    assert_eq!(value(&text, limit), Some(1.0));
    assert_eq!(value(&text, "stolon_proxy_clients_held_total"), Some(1.0));
    let hold_timeout = r#"stolon_proxy_clients_refused_total{reason="hold_timeout"}"#;
    assert_eq!(value(&text, hold_timeout), Some(1.0));
    let kernel = "stolon_proxy_kernel_forwarded_sessions_total";
    assert_eq!(value(&text, kernel), Some(1.0));
    let ro = p.for_read_only();
    let c = ro.session_started();
    ro.connect_error();
    ro.refused(Refusal::NoStandby);
    let text = render(&reg);
    assert_eq!(value(&text, "stolon_proxy_sessions_total"), Some(2.0));
    assert_eq!(
        value(&text, "stolon_proxy_read_only_sessions_active"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "stolon_proxy_read_only_connect_errors_total"),
        Some(1.0)
    );
    let no_standby = r#"stolon_proxy_clients_refused_total{reason="no_standby"}"#;
    assert_eq!(value(&text, no_standby), Some(1.0));
    drop((a, b, c));
    let text = render(&reg);
    assert_eq!(value(&text, "stolon_proxy_sessions_active"), Some(0.0));
    assert_eq!(value(&text, "stolon_proxy_sessions_total"), Some(2.0));
}

#[test]
fn store_contact_is_zero_until_a_request_succeeds() {
    let reg = Metrics::new();
    let contact = LastContact::default();
    lock(&reg.inner.registry).register_collector(Box::new(store::StoreContact(contact.clone())));
    let text = render(&reg);
    assert!(
        text.contains("# TYPE stolon_store_last_success_seconds gauge"),
        "{text}"
    );
    assert_eq!(value(&text, store::NAME), Some(0.0));
    contact.touch();
    let t = value(&render(&reg), store::NAME);
    assert!(t.is_some_and(|t| (t - unix_now()).abs() < 60.0), "{t:?}");
}

/// One HTTP/1.0 request; the raw answer.
async fn get(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn endpoint_serves_get_metrics_only_and_stops() {
    let reg = Metrics::served();
    reg.proxy("c1");
    let listener = bind("metrics-listen-address", "127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let routes = Routes {
        metrics: true,
        health: true,
    };
    let server = tokio::spawn(serve(listener, reg.clone(), routes, stop.clone()));

    let ok = get(addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
    assert!(
        ok.to_ascii_lowercase()
            .contains(&format!("content-type: {CONTENT_TYPE}")),
        "{ok}"
    );
    assert!(ok.contains("stolon_proxy_sessions_total 0\n"), "{ok}");
    for bad in [
        "GET / HTTP/1.0",
        "GET /metricsx HTTP/1.0",
        "POST /metrics HTTP/1.0",
        // Health paths exist on keepers only.
        "GET /health HTTP/1.0",
        "GET /primary HTTP/1.0",
    ] {
        let answer = get(addr, &format!("{bad}\r\n\r\n")).await;
        assert!(
            answer.starts_with("HTTP/1.0 404 Not Found\r\n"),
            "{bad}: {answer}"
        );
    }

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening"
    );
}

#[tokio::test]
async fn a_taken_address_is_an_error_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let e = bind("api-listen-address", &addr)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.starts_with(&format!("--api-listen-address {addr}: cannot listen:")),
        "{e}"
    );
    assert!(e.ends_with("change --api-listen-address)"), "{e}");
    // `:port` means every address, as Go's net/http takes it.
    let any = bind("metrics-listen-address", ":0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    assert!(any.ip().is_unspecified(), "{any}");
}
