//! Switchover benchmark (run by hand, never in CI; prints figures, never fails on timing): what a
//! client sees while the master moves, with `stolonctl switchover` (planned: proxies hold new
//! connections, the old master stops cleanly, the target catches up, nothing is lost) and with
//! `stolonctl failkeeper` (upstream's only way: an uncontrolled failover), alternating in one
//! run on the same cluster.
//!
//! During each round a client opens a new connection through the proxy every 20 ms and inserts
//! one row; it records which inserts were acknowledged. Reported per round: the longest gap
//! between two acknowledged writes, the failed attempts (connection or query), the acknowledged
//! writes missing afterwards, and the time until the cluster is redundant again (polled every
//! 50 ms while the client writes on).
//!
//! Usage: bench/switchover [--rounds 3]
//! Env: STOLON_LOCAL_DIR (default /tmp/stolon-bench-switchover), STOLON_LOCAL_BASE_PORT
//! (26560), BENCH_KEEP=1 leaves the cluster running afterwards.

#[path = "common.rs"]
mod common;

use anyhow::{Context, Result, bail};
use common::{Local, cluster_data, median, via_proxy};
use etcd_client::Client;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the client writes, each time on a new connection.
const WRITE_EVERY: Duration = Duration::from_millis(20);
/// Bounds one attempt (connect + insert): a held connection waits at most the proxy's hold.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    Switchover,
    Failkeeper,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Switchover => "switchover",
            Way::Failkeeper => "failkeeper",
        }
    }
}

struct Round {
    /// Longest time between two acknowledged writes, ms.
    gap_ms: f64,
    failed: usize,
    acked: usize,
    lost: usize,
    /// Command start → the new master takes writes through the proxy (polled every 20 ms), ms.
    switch_ms: f64,
    /// Command start → every db healthy and streaming again, the old master included (after a
    /// failkeeper it is rewound first), s.
    redundant_s: f64,
}

struct Bench {
    l: Local,
    etcd: Client,
    proxy: tokio_postgres::Config,
}

/// One attempt's outcome: when it was acknowledged, or an error.
struct Attempt {
    id: i64,
    acked_at: Option<Instant>,
}

async fn insert(cfg: &tokio_postgres::Config, id: i64) -> Result<()> {
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .simple_query(&format!("insert into sw (id) values ({id})"))
        .await?;
    Ok(())
}

impl Bench {
    async fn stolonctl(&self, args: &[&str]) -> Result<String> {
        let out = self.l.stolonctl()?.args(args).output().await?;
        if !out.status.success() {
            bail!(
                "stolonctl {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn wait_steady(&mut self) -> Result<()> {
        common::wait_steady(
            &mut self.etcd,
            &self.l,
            &self.proxy,
            Duration::from_secs(600),
        )
        .await
    }

    async fn master(&mut self) -> Result<(String, String)> {
        let cd = cluster_data(&mut self.etcd, &self.l.key).await?;
        let db = cd["cluster"]["status"]["master"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let keeper = cd["dbs"][&db]["spec"]["keeperUID"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok((db, keeper))
    }

    async fn one_round(&mut self, way: Way, first_id: i64) -> Result<Round> {
        self.wait_steady().await?;
        let (old_db, old_keeper) = self.master().await?;
        let stop = Arc::new(AtomicBool::new(false));
        let client = {
            let (cfg, stop) = (self.proxy.clone(), stop.clone());
            tokio::spawn(async move {
                let mut attempts = Vec::new();
                let mut id = first_id;
                let mut next = tokio::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    let ok = tokio::time::timeout(ATTEMPT_TIMEOUT, insert(&cfg, id))
                        .await
                        .is_ok_and(|r| r.is_ok());
                    attempts.push(Attempt {
                        id,
                        acked_at: ok.then(Instant::now),
                    });
                    next += WRITE_EVERY;
                    tokio::time::sleep_until(next.max(tokio::time::Instant::now())).await;
                }
                attempts
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        match way {
            Way::Switchover => {
                self.stolonctl(&["switchover", "-y"]).await?;
            }
            Way::Failkeeper => {
                self.stolonctl(&["failkeeper", &old_keeper]).await?;
            }
        }
        // Until the new master takes writes.
        let switch_ms = loop {
            let (db, _) = self.master().await?;
            if db != old_db
                && via_proxy(&self.proxy, "select 1 where not pg_is_in_recovery()")
                    .await
                    .is_ok_and(|r| !r.is_empty())
            {
                break started.elapsed().as_secs_f64() * 1000.0;
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("no new master within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Redundancy is timed while the client keeps writing for 2 s more, not after that
        // window: it would otherwise count the window itself.
        let write_on = tokio::time::sleep(Duration::from_secs(2));
        let steady_at = async {
            self.wait_steady()
                .await
                .map(|()| started.elapsed().as_secs_f64())
        };
        let (redundant_s, ()) = tokio::join!(steady_at, write_on);
        let redundant_s = redundant_s?;
        stop.store(true, Ordering::Relaxed);
        let attempts = client.await.context("the client task")?;
        let acked: Vec<&Attempt> = attempts.iter().filter(|a| a.acked_at.is_some()).collect();
        let times: Vec<Instant> = acked.iter().filter_map(|a| a.acked_at).collect();
        let gap_ms = times
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
            .fold(0.0, f64::max);
        // What the new master has (the failed one's unreplicated commits are gone for good).
        let stored: std::collections::HashSet<i64> = via_proxy(
            &self.proxy,
            &format!(
                "select id from sw where id > {first_id} and id <= {}",
                first_id + attempts.len() as i64
            ),
        )
        .await?
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
        let lost = acked.iter().filter(|a| !stored.contains(&a.id)).count();
        Ok(Round {
            gap_ms,
            failed: attempts.len() - acked.len(),
            acked: acked.len(),
            lost,
            switch_ms,
            redundant_s,
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut rounds_wanted = 3;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--rounds", Some(v)) => rounds_wanted = v.parse()?,
            _ => bail!("usage: bench/switchover [--rounds N] (see bench/switchover.rs)"),
        }
    }
    let (l, etcd, proxy) =
        common::two_keeper_cluster("/tmp/stolon-bench-switchover", 26560).await?;
    let mut b = Bench { l, etcd, proxy };
    b.wait_steady().await?;
    via_proxy(
        &b.proxy,
        "create table if not exists sw (id bigint primary key)",
    )
    .await?;

    println!(
        "{:<6} {:<11} {:>10} {:>9} {:>7} {:>6} {:>5} {:>12}",
        "round", "way", "switch ms", "gap ms", "failed", "acked", "lost", "redundant s"
    );
    let mut results: Vec<(Way, Round)> = Vec::new();
    let mut next_id = 0;
    for round in 1..=rounds_wanted {
        for way in [Way::Switchover, Way::Failkeeper] {
            match b.one_round(way, next_id).await {
                Ok(r) => {
                    println!(
                        "{round:<6} {:<11} {:>10.0} {:>9.0} {:>7} {:>6} {:>5} {:>12.2}",
                        way.name(),
                        r.switch_ms,
                        r.gap_ms,
                        r.failed,
                        r.acked,
                        r.lost,
                        r.redundant_s
                    );
                    next_id += 100_000;
                    results.push((way, r));
                }
                Err(e) => eprintln!("round {round} {}: {e:#}", way.name()),
            }
        }
    }
    let med = |way: Way, f: fn(&Round) -> f64| {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|(w, _)| *w == way)
            .map(|(_, r)| f(r))
            .collect();
        v.sort_by(f64::total_cmp);
        median(&v)
    };
    let total = |way: Way, f: fn(&Round) -> usize| -> usize {
        results
            .iter()
            .filter(|(w, _)| *w == way)
            .map(|(_, r)| f(r))
            .sum()
    };
    println!("\nmedians over the rounds (a new connection and one insert every 20 ms):");
    for way in [Way::Switchover, Way::Failkeeper] {
        println!(
            "  {:<11} switch {:5.0} ms, longest write gap {:5.0} ms, redundant again after {:6.2} s; in all: {} failed attempts, {} acknowledged writes lost",
            way.name(),
            med(way, |r| r.switch_ms),
            med(way, |r| r.gap_ms),
            med(way, |r| r.redundant_s),
            total(way, |r| r.failed),
            total(way, |r| r.lost)
        );
    }
    let (sw_gap, fk_gap) = (
        med(Way::Switchover, |r| r.gap_ms),
        med(Way::Failkeeper, |r| r.gap_ms),
    );
    let (sw_red, fk_red) = (
        med(Way::Switchover, |r| r.redundant_s),
        med(Way::Failkeeper, |r| r.redundant_s),
    );
    if sw_gap > 0.0 && sw_red > 0.0 {
        println!(
            "  failkeeper / switchover: longest write gap {:.2}x, time to full redundancy {:.2}x",
            fk_gap / sw_gap,
            fk_red / sw_red
        );
    }
    if std::env::var("BENCH_KEEP").as_deref() != Ok("1") {
        b.l.script("down", true)?;
    }
    Ok(())
}
