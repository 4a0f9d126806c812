//! What the benchmarks share: driving `scripts/local-cluster.sh` and reading what it wrote.

// Each benchmark (an example of its own) uses a part of this file.
#![allow(dead_code)]

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::Client;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgid};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A local cluster of the benchmark's own (state dir and ports apart from the demo cluster's).
pub(crate) struct Local {
    pub(crate) state: PathBuf,
    script: PathBuf,
    base_port: String,
    /// Settings for the script (`STOLON_*`), fixed for the benchmark.
    settings: Vec<(&'static str, String)>,
    /// What the script wrote to `<state>/env` (ports, user, password file, cluster name).
    pub(crate) env: HashMap<String, String>,
    /// The clusterdata key in etcd.
    pub(crate) key: String,
}

impl Local {
    /// `STOLON_LOCAL_DIR` and `STOLON_LOCAL_BASE_PORT` override the defaults given here.
    pub(crate) fn new(
        default_state: &str,
        default_base_port: u16,
        settings: Vec<(&'static str, String)>,
    ) -> Local {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        Local {
            state: PathBuf::from(
                std::env::var("STOLON_LOCAL_DIR").unwrap_or_else(|_| default_state.into()),
            ),
            script: repo.join("scripts/local-cluster.sh"),
            base_port: std::env::var("STOLON_LOCAL_BASE_PORT")
                .unwrap_or_else(|_| default_base_port.to_string()),
            settings,
            env: HashMap::new(),
            key: String::new(),
        }
    }

    pub(crate) fn base_port(&self) -> Result<u16> {
        self.base_port
            .parse()
            .with_context(|| format!("STOLON_LOCAL_BASE_PORT {:?}", self.base_port))
    }

    pub(crate) fn script(&self, verb: &str, skip_build: bool) -> Result<()> {
        let mut cmd = Command::new(&self.script);
        cmd.arg(verb)
            .env("STOLON_LOCAL_DIR", &self.state)
            .env("STOLON_LOCAL_BASE_PORT", &self.base_port)
            .envs(self.settings.iter().map(|(k, v)| (k, v)));
        if skip_build {
            // Restarts between runs: only the script's errors are worth showing.
            cmd.env("STOLON_SKIP_BUILD", "1")
                .stdout(std::process::Stdio::null());
        }
        let st = cmd.status().context("running scripts/local-cluster.sh")?;
        if !st.success() {
            bail!("scripts/local-cluster.sh {verb} failed ({st})");
        }
        Ok(())
    }

    /// Reads `<state>/env`, written by `up`.
    pub(crate) fn load_env(&mut self) -> Result<()> {
        let path = self.state.join("env");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                self.env.insert(k.to_string(), v.to_string());
            }
        }
        self.key = format!("stolon/cluster/{}/clusterdata", self.var("CLUSTER_NAME")?);
        Ok(())
    }

    pub(crate) fn var(&self, name: &str) -> Result<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("{name} missing from {}/env", self.state.display()))
    }

    pub(crate) fn su_password(&self) -> Result<String> {
        let path = self.var("SU_PASSWORD_FILE")?;
        Ok(std::fs::read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .trim_end()
            .to_string())
    }

    /// The superuser's connection to `port` on 127.0.0.1.
    pub(crate) fn pg_config(&self, port: u16) -> Result<tokio_postgres::Config> {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(port)
            .user(self.var("SU_USER")?)
            .password(self.su_password()?)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(1));
        Ok(c)
    }

    /// The pid the script recorded for one of its processes (`proxy`, `keeper0`, ...).
    /// `stolonctl` of this cluster: its binary with the store flags, ready for a subcommand.
    pub(crate) fn stolonctl(&self) -> Result<tokio::process::Command> {
        let mut cmd = tokio::process::Command::new(self.state.join("bin/stolonctl"));
        cmd.args([
            "--cluster-name",
            self.var("CLUSTER_NAME")?,
            "--store-backend",
            "etcdv3",
            "--store-endpoints",
            self.var("ETCD_ENDPOINT")?,
        ]);
        Ok(cmd)
    }

    pub(crate) fn pid(&self, name: &str) -> Result<i32> {
        let path = self.state.join("run").join(format!("{name}.pid"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("pid in {}", path.display()))
    }
}

pub(crate) async fn cluster_data(etcd: &mut Client, key: &str) -> Result<Value> {
    let resp = etcd.get(key, None).await?;
    let kv = resp
        .kvs()
        .first()
        .ok_or_else(|| anyhow!("no clusterdata"))?;
    Ok(serde_json::from_slice(kv.value())?)
}

/// One query through the proxy in a fresh session, bounded to 2 s.
pub(crate) async fn via_proxy(cfg: &tokio_postgres::Config, sql: &str) -> Result<Vec<String>> {
    tokio::time::timeout(Duration::from_secs(2), async {
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        let msgs = client.simple_query(sql).await?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .collect())
    })
    .await
    .map_err(|_| anyhow!("timed out"))?
}

/// Every db healthy and converged, the master streaming to all standbys, the proxy serving it.
pub(crate) async fn steady(
    etcd: &mut Client,
    l: &Local,
    cfg: &tokio_postgres::Config,
) -> Result<bool> {
    let cd = cluster_data(etcd, &l.key).await?;
    let n: usize = l.var("NKEEPERS")?.parse()?;
    let dbs = cd["dbs"]
        .as_object()
        .map(|d| d.values().collect::<Vec<_>>())
        .unwrap_or_default();
    let good = dbs.len() == n
        && dbs.iter().all(|d| {
            d["status"]["healthy"] == true && d["generation"] == d["status"]["currentGeneration"]
        })
        && cd["proxy"]["spec"]["masterDbUid"] == cd["cluster"]["status"]["master"];
    if !good {
        return Ok(false);
    }
    let streaming = via_proxy(
        cfg,
        "select count(*) from pg_stat_replication where state = 'streaming'",
    )
    .await;
    Ok(matches!(streaming, Ok(r) if r.first().map(String::as_str) == Some(&(n - 1).to_string())))
}

pub(crate) fn kill_keeper(state: &Path, keeper: &str) -> Result<()> {
    let pid: i32 = std::fs::read_to_string(state.join("run").join(format!("{keeper}.pid")))?
        .trim()
        .parse()?;
    let pm = std::fs::read_to_string(state.join(keeper).join("postgres/postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
    // The keeper leads its own session (setsid); its postgres may lead another group.
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    if let Some(pm) = pm {
        let p = Pid::from_raw(pm);
        if getpgid(Some(p)) == Ok(p) {
            let _ = killpg(p, Signal::SIGKILL);
        }
        let _ = kill(p, Signal::SIGKILL);
    }
    Ok(())
}

/// `median, max` of the figures, or `n/a`.
pub(crate) fn stats(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort_by(f64::total_cmp);
    format!("median {:.2}, max {:.2}", median(&v), v[v.len() - 1])
}

/// Median of sorted figures (0 when empty).
pub(crate) fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n.is_multiple_of(2) => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        _ => sorted[n / 2],
    }
}

/// Waits up to `within` for [`steady`], polling every `every`.
pub(crate) async fn wait_steady(
    etcd: &mut Client,
    l: &Local,
    cfg: &tokio_postgres::Config,
    within: Duration,
) -> Result<()> {
    let deadline = std::time::Instant::now() + within;
    while !steady(etcd, l, cfg).await.unwrap_or(false) {
        if std::time::Instant::now() > deadline {
            bail!(
                "cluster not steady within {} s (see {}/logs)",
                within.as_secs(),
                l.state.display()
            );
        }
        // Fine enough for the time-to-redundancy figures (bench/switchover) to mean something.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A fresh two-keeper, one-sentinel cluster with pg_rewind on (so a failed master comes back
/// quickly), sleepInterval 2 s and failInterval 5 s; returns it with an etcd client and the
/// proxy's connection settings.
pub(crate) async fn two_keeper_cluster(
    state: &str,
    base_port: u16,
) -> Result<(Local, Client, tokio_postgres::Config)> {
    let mut l = Local::new(
        state,
        base_port,
        vec![
            ("STOLON_LOCAL_KEEPERS", "2".into()),
            ("STOLON_LOCAL_SENTINELS", "1".into()),
            ("STOLON_SLEEP_INTERVAL", "2s".into()),
            ("STOLON_FAIL_INTERVAL", "5s".into()),
            ("STOLON_USE_PG_REWIND", "true".into()),
        ],
    );
    l.script("purge", true)?;
    l.script("up", false)?;
    l.load_env()?;
    let proxy = l.pg_config(l.var("PROXY_PORT")?.parse()?)?;
    let etcd = Client::connect([l.var("ETCD_ENDPOINT")?], None).await?;
    Ok((l, etcd, proxy))
}
