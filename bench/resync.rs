//! Resync benchmark (run by hand, never in CI; prints figures, never fails on timing): how long a
//! failed master takes to stream again from its replacement, with `usePgrewind` (pg_rewind:
//! only what changed is copied) and without it (pg_basebackup of everything, upstream's only
//! way), alternating in one run on the same database of `--scale` pgbench scale units (the
//! default 70 is about 1 GB).
//!
//! Each round: a write load through the proxy, SIGKILL of the master's keeper and postgres,
//! more writes on the new master, then the old keeper is started again and timed until its
//! PostgreSQL streams from the new master (`pg_stat_wal_receiver.status = 'streaming'`). The
//! keeper's log says which way it went (`pg_rewind done` or a basebackup).
//!
//! Usage: bench/resync [--rounds 2] [--scale 70] [--writes-seconds 5]
//! Env: STOLON_LOCAL_DIR (default /tmp/stolon-bench-resync), STOLON_LOCAL_BASE_PORT (26530),
//! BENCH_KEEP=1 leaves the cluster running afterwards.

#[path = "common.rs"]
mod common;

use anyhow::{Context, Result, bail};
use common::{Local, cluster_data, kill_keeper, median, via_proxy};
use etcd_client::Client;
use std::process::Command;
use std::time::{Duration, Instant};

struct Args {
    rounds: usize,
    scale: u32,
    writes_seconds: u32,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rounds: 2,
        scale: 70,
        writes_seconds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rounds" => a.rounds = value.parse()?,
            "--scale" => a.scale = value.parse()?,
            "--writes-seconds" => a.writes_seconds = value.parse()?,
            other => bail!("unknown flag {other} (see bench/resync.rs)"),
        }
    }
    Ok(a)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Rewind,
    Basebackup,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Rewind => "usePgrewind on",
            Mode::Basebackup => "usePgrewind off",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum How {
    Rewind,
    RewindFailed,
    Basebackup,
    Unknown,
}

impl How {
    fn name(self) -> &'static str {
        match self {
            How::Rewind => "pg_rewind",
            How::RewindFailed => "pg_rewind failed, then pg_basebackup",
            How::Basebackup => "pg_basebackup",
            How::Unknown => "? (see the keeper's log)",
        }
    }
}

struct Round {
    keeper: String,
    how: How,
    /// Keeper start → streaming, seconds.
    total: f64,
    /// First resync log line → streaming, seconds.
    resync: Option<f64>,
    /// What was copied from the new master, MB (on a network, what the time depends on).
    copied_mb: Option<f64>,
}

/// From the keeper's log: pg_rewind's "need to copy N MB", or pg_basebackup's last progress
/// line "pg_basebackup 100% (done/total bytes)".
fn copied_mb(log: &str) -> Option<f64> {
    let rewind = log.lines().rev().find_map(|l| {
        let rest = &l[l.find("need to copy ")? + "need to copy ".len()..];
        rest.split_whitespace().next()?.parse::<f64>().ok()
    });
    rewind.or_else(|| {
        log.lines().rev().find_map(|l| {
            let inside = &l[l.find("pg_basebackup 100% (")? + "pg_basebackup 100% (".len()..];
            let done = inside.split('/').next()?.parse::<f64>().ok()?;
            Some(done / 1024.0 / 1024.0)
        })
    })
}

struct Bench {
    l: Local,
    etcd: Client,
    proxy: tokio_postgres::Config,
}

impl Bench {
    fn pgbench(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("pgbench")
            .args(["-h", "127.0.0.1", "-p", self.l.var("PROXY_PORT")?])
            .args(["-U", self.l.var("SU_USER")?])
            .args(args)
            .arg("postgres")
            .env("PGPASSWORD", self.l.su_password()?)
            .output()
            .context("running pgbench (apt-get install postgresql-client)")?;
        if !out.status.success() {
            bail!(
                "pgbench {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    async fn stolonctl(&self, args: &[&str]) -> Result<()> {
        let st = self
            .l
            .stolonctl()?
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .await?;
        if !st.success() {
            bail!("stolonctl {args:?} failed ({st})");
        }
        Ok(())
    }

    async fn wait_steady(&mut self) -> Result<()> {
        common::wait_steady(
            &mut self.etcd,
            &self.l,
            &self.proxy,
            Duration::from_secs(900),
        )
        .await
    }

    async fn master_keeper(&mut self) -> Result<String> {
        let cd = cluster_data(&mut self.etcd, &self.l.key).await?;
        let db = cd["cluster"]["status"]["master"]
            .as_str()
            .unwrap_or_default();
        Ok(cd["dbs"][db]["spec"]["keeperUID"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// The old master's way back: from its keeper's start, and from the start of the resync
    /// (the keeper's log line), to its PostgreSQL streaming.
    async fn one_round(&mut self, mode: Mode, writes: &str) -> Result<Round> {
        let rewind = matches!(mode, Mode::Rewind);
        self.stolonctl(&[
            "update",
            "--patch",
            &format!(r#"{{"usePgrewind": {rewind}}}"#),
        ])
        .await?;
        self.wait_steady().await?;
        self.pgbench(&["-N", "-c", "2", "-T", writes])?;
        let old = self.master_keeper().await?;
        kill_keeper(&self.l.state, &old)?;
        let killed = Instant::now();
        while via_proxy(&self.proxy, "select 1 where not pg_is_in_recovery()")
            .await
            .map_or(true, |rows| rows.is_empty())
        {
            if killed.elapsed() > Duration::from_secs(120) {
                bail!("no new master within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.pgbench(&["-N", "-c", "2", "-T", writes])?;

        let log_path = self.l.state.join("logs").join(format!("{old}.log"));
        let log_before = std::fs::metadata(&log_path).map_or(0, |m| m.len() as usize);
        let started = Instant::now();
        self.l.script("up", true)?;
        let index: u16 = old.trim_start_matches("keeper").parse()?;
        let port = self.l.base_port()? + 3 + index;
        let cfg = self.l.pg_config(port)?;
        loop {
            let streaming = async {
                let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                let rows = client
                    .simple_query("select status from pg_stat_wal_receiver")
                    .await?;
                anyhow::Ok(rows.iter().any(|m| {
                    matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("streaming"))
                }))
            };
            if tokio::time::timeout(Duration::from_secs(3), streaming)
                .await
                .is_ok_and(|r| r.unwrap_or(false))
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(1800) {
                bail!("{old} not streaming within 30 min");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let total = started.elapsed().as_secs_f64();
        let streaming_at = chrono::Utc::now();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail = log.get(log_before..).unwrap_or_default();
        let how = if tail.contains("pg_rewind done") {
            How::Rewind
        } else if tail.contains("pg_rewind failed") {
            How::RewindFailed
        } else if tail.contains("pg_basebackup") {
            How::Basebackup
        } else {
            How::Unknown
        };
        // The keeper's start (its duplicate-uid watch, the first store round trips) is the
        // same either way; the resync itself is what usePgrewind changes.
        let resync = tail
            .lines()
            .find(|l| l.contains("resyncing the database cluster"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| (streaming_at - t.with_timezone(&chrono::Utc)).as_seconds_f64());
        Ok(Round {
            keeper: old,
            how,
            total,
            resync,
            copied_mb: copied_mb(tail),
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    // usePgrewind from the start, so both instances run with wal_log_hints; the rounds
    // without rewind turn it off in the spec only.
    let (l, etcd, proxy) = common::two_keeper_cluster("/tmp/stolon-bench-resync", 26530).await?;
    let mut b = Bench { l, etcd, proxy };

    let load = Instant::now();
    b.pgbench(&["-i", "-q", "-s", &args.scale.to_string()])?;
    let size = via_proxy(
        &b.proxy,
        "select pg_size_pretty(pg_database_size('postgres'))",
    )
    .await?;
    println!(
        "pgbench scale {}: database {} loaded in {:.0} s",
        args.scale,
        size.first().map_or("?", String::as_str),
        load.elapsed().as_secs_f64()
    );

    let writes = args.writes_seconds.to_string();
    let mut rounds: Vec<(Mode, Round)> = Vec::new();
    println!(
        "{:<6} {:<16} {:<8} {:>13} {:>14} {:>10}  how",
        "round", "spec", "keeper", "start->stream", "resync->stream", "copied"
    );
    for round in 1..=args.rounds {
        for mode in [Mode::Rewind, Mode::Basebackup] {
            match b.one_round(mode, &writes).await {
                Ok(r) => {
                    println!(
                        "{round:<6} {:<16} {:<8} {:>12.2}s {:>13} {:>10}  {}",
                        mode.name(),
                        r.keeper,
                        r.total,
                        r.resync.map_or("?".into(), |s| format!("{s:.2}s")),
                        r.copied_mb.map_or("?".into(), |mb| format!("{mb:.0} MB")),
                        r.how.name()
                    );
                    rounds.push((mode, r));
                }
                Err(e) => eprintln!("round {round} {}: {e:#}", mode.name()),
            }
        }
    }

    // Only the rounds that went the way their spec says: a failed rewind is a basebackup.
    let med = |how: How, f: fn(&Round) -> Option<f64>| {
        let mut v: Vec<f64> = rounds
            .iter()
            .filter(|(_, r)| r.how == how)
            .filter_map(|(_, r)| f(r))
            .collect();
        v.sort_by(f64::total_cmp);
        (median(&v), v.len())
    };
    let (rw_total, n_rw) = med(How::Rewind, |r| Some(r.total));
    let (bb_total, n_bb) = med(How::Basebackup, |r| Some(r.total));
    let (rw_resync, _) = med(How::Rewind, |r| r.resync);
    let (bb_resync, _) = med(How::Basebackup, |r| r.resync);
    let (rw_mb, _) = med(How::Rewind, |r| r.copied_mb);
    let (bb_mb, _) = med(How::Basebackup, |r| r.copied_mb);
    println!(
        "\nold master streaming again after a failover (medians; database {}):",
        size.first().map_or("?", String::as_str)
    );
    println!(
        "  pg_rewind     ({n_rw} rounds): keeper start -> streaming {rw_total:7.2} s, resync -> streaming {rw_resync:7.2} s, copied {rw_mb:6.0} MB"
    );
    println!(
        "  pg_basebackup ({n_bb} rounds): keeper start -> streaming {bb_total:7.2} s, resync -> streaming {bb_resync:7.2} s, copied {bb_mb:6.0} MB"
    );
    if rw_total > 0.0 && rw_resync > 0.0 {
        println!(
            "  pg_basebackup / pg_rewind: {:.2}x from the keeper's start, {:.2}x for the resync itself",
            bb_total / rw_total,
            bb_resync / rw_resync
        );
    }
    if rw_mb > 0.0 {
        println!(
            "  copied: pg_basebackup / pg_rewind {:.1}x (over loopback with the data in the page cache a copy costs little; on a network it is most of a resync)",
            bb_mb / rw_mb
        );
    }
    let failed = rounds
        .iter()
        .filter(|(_, r)| r.how == How::RewindFailed)
        .count();
    if failed > 0 {
        println!(
            "  {failed} rewind(s) failed and fell back to pg_basebackup (the keeper's log says why)"
        );
    }
    if std::env::var("BENCH_KEEP").as_deref() != Ok("1") {
        b.l.script("down", true)?;
    }
    Ok(())
}
