//! Failover benchmark (run by hand, never in CI; prints figures, never fails on timing).
//!
//! Starts the local cluster (`scripts/local-cluster.sh`) with sleepInterval 2s and failInterval
//! 5s, then N times (default 5): waits for a steady cluster, SIGKILLs the master's keeper and its
//! postgres, and measures
//!   - kill → first successful INSERT through the proxy, and
//!   - new master published in the store (`proxy.spec.masterDbUid` set to the new db, seen by an
//!     etcd watch) → first successful INSERT through the proxy (the proxy routing to it),
//!
//! then restarts the killed keeper so it rejoins as a standby.
//!
//! Usage: bench/failover [runs]   (or: cargo run --example failover -- [runs])
//! Env: STOLON_LOCAL_DIR (default /tmp/stolon-bench-failover), STOLON_LOCAL_BASE_PORT (26430),
//! BENCH_KEEP=1 leaves the cluster running afterwards.

#[path = "common.rs"]
mod common;

use anyhow::{Result, bail};
use common::{Local, cluster_data, kill_keeper, stats, steady, via_proxy};
use etcd_client::Client;
use serde_json::Value;
use std::time::{Duration, Instant};

struct Run {
    killed: String,
    new_master: String,
    kill_to_insert: Option<Duration>,
    store_to_route_ms: Option<i128>,
}

async fn one_run(etcd: &mut Client, l: &Local, cfg: &tokio_postgres::Config) -> Result<Run> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !steady(etcd, l, cfg).await.unwrap_or(false) {
        if Instant::now() > deadline {
            bail!(
                "cluster not steady within 300 s (see {}/logs)",
                l.state.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    via_proxy(
        cfg,
        "create table if not exists bench (t timestamptz default now())",
    )
    .await?;
    let cd = cluster_data(etcd, &l.key).await?;
    let old_db = cd["cluster"]["status"]["master"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let killed = cd["dbs"][&old_db]["spec"]["keeperUID"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // The watch is set up before the kill so the publication cannot be missed.
    let mut stream = etcd.watch(l.key.as_str(), None).await?;
    let old = old_db.clone();
    let published = tokio::spawn(async move {
        while let Ok(Some(resp)) = stream.message().await {
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let Ok(cd) = serde_json::from_slice::<Value>(kv.value()) else {
                    continue;
                };
                let m = cd["proxy"]["spec"]["masterDbUid"]
                    .as_str()
                    .unwrap_or_default();
                if !m.is_empty() && m != old {
                    let keeper = cd["dbs"][m]["spec"]["keeperUID"]
                        .as_str()
                        .unwrap_or_default();
                    return Some((Instant::now(), keeper.to_string()));
                }
            }
        }
        None
    });

    let killed_at = Instant::now();
    kill_keeper(&l.state, &killed)?;
    let mut inserted_at = None;
    while killed_at.elapsed() < Duration::from_secs(120) {
        if via_proxy(cfg, "insert into bench default values")
            .await
            .is_ok()
        {
            inserted_at = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let publication = tokio::time::timeout(Duration::from_secs(5), published)
        .await
        .ok()
        .and_then(|r| r.ok().flatten());
    let store_to_route_ms = match (&publication, inserted_at) {
        (Some((at, _)), Some(ins)) => Some(
            ins.duration_since(killed_at).as_millis() as i128
                - at.duration_since(killed_at).as_millis() as i128,
        ),
        _ => None,
    };
    Ok(Run {
        killed,
        new_master: publication.map(|(_, k)| k).unwrap_or_else(|| "?".into()),
        kill_to_insert: inserted_at.map(|t| t.duration_since(killed_at)),
        store_to_route_ms,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(5);
    let mut l = Local::new(
        "/tmp/stolon-bench-failover",
        26430,
        vec![
            ("STOLON_SLEEP_INTERVAL", "2s".into()),
            ("STOLON_FAIL_INTERVAL", "5s".into()),
        ],
    );
    // A fresh cluster each time: its spec (sleepInterval 2s, failInterval 5s) is set at init.
    l.script("purge", true)?;
    l.script("up", false)?;
    l.load_env()?;
    let cfg = l.pg_config(l.var("PROXY_PORT")?.parse()?)?;
    let mut etcd = Client::connect([l.var("ETCD_ENDPOINT")?], None).await?;

    let mut results = Vec::new();
    for i in 1..=runs {
        match one_run(&mut etcd, &l, &cfg).await {
            Ok(r) => results.push(r),
            Err(e) => eprintln!("run {i}: {e:#}"),
        }
        // Bring the killed keeper back; it rejoins as a standby before the next run.
        l.script("up", true)?;
    }

    println!(
        "\nfailover with sleepInterval 2s, failInterval 5s ({} runs)",
        results.len()
    );
    println!(
        "{:<4} {:<9} {:<11} {:>22} {:>28}",
        "run", "killed", "new master", "kill -> INSERT ok (s)", "store -> proxy routes (ms)"
    );
    for (i, r) in results.iter().enumerate() {
        println!(
            "{:<4} {:<9} {:<11} {:>22} {:>28}",
            i + 1,
            r.killed,
            r.new_master,
            r.kill_to_insert
                .map_or("none in 120s".into(), |d| format!("{:.2}", d.as_secs_f64())),
            r.store_to_route_ms
                .map_or("n/a".into(), |ms| ms.to_string()),
        );
    }
    println!(
        "kill -> first INSERT through the proxy (s): {}",
        stats(
            results
                .iter()
                .filter_map(|r| r.kill_to_insert.map(|d| d.as_secs_f64()))
                .collect()
        )
    );
    println!(
        "new master in store -> proxy routes to it (ms): {}",
        stats(
            results
                .iter()
                .filter_map(|r| r.store_to_route_ms.map(|ms| ms as f64))
                .collect()
        )
    );
    if std::env::var("BENCH_KEEP").as_deref() != Ok("1") {
        l.script("down", true)?;
    }
    Ok(())
}
