//! Proxy cost benchmark (run by hand, never in CI; prints figures, never fails on timing).
//!
//! Starts a one-keeper local cluster (`scripts/local-cluster.sh`, release build) and HAProxy from
//! the distribution in tcp mode in front of the same PostgreSQL, then alternates direct / ours /
//! HAProxy for every pgbench workload, several rounds in one run:
//!   - select-only (`-S`), connect-per-transaction (`-S -C`), simple-protocol writes (`-N -M simple`);
//!   - TPS, average latency, ours/direct, ours/HAProxy, and each proxy's CPU time per transaction
//!     (utime+stime from /proc over the run, divided by the transactions pgbench counted), and
//!     the whole machine's busy CPU per transaction (it also counts the kernel threads that move
//!     the bytes for `--kernel-forwarding`, which no process's own time shows);
//!   - the time a new connection (TCP, startup, SCRAM) takes through each, p50/p99;
//!   - N idle client connections through our proxy: its RSS, PostgreSQL's client backends, and
//!     whether a fresh client is still served.
//!
//! The cluster's processes start with a soft open-file limit of 1024 (what systemd gives a
//! service) and a high hard limit, so the idle test also shows the proxy raising its own.
//!
//! With `--kernel` the binaries are built with the kernel-forwarding feature (needs clang and
//! root) and a second stolon-proxy with `--kernel-forwarding` runs next to the first.
//!
//! Usage: bench/proxy [--rounds 3] [--seconds 10] [--clients 8] [--idle 10000] [--kernel]
//! Env: STOLON_LOCAL_DIR (default /tmp/stolon-bench-proxy), STOLON_LOCAL_BASE_PORT (26530),
//! BENCH_KEEP=1 leaves the cluster running afterwards.

#[path = "common.rs"]
mod common;

use anyhow::{Context, Result, anyhow, bail};
use common::{Local, median};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

const PGBENCH_SCALE: &str = "10";

struct Options {
    rounds: usize,
    seconds: u32,
    clients: u32,
    idle: usize,
    kernel: bool,
}

fn options() -> Result<Options> {
    let mut o = Options {
        rounds: 3,
        seconds: 10,
        clients: 8,
        idle: 10_000,
        kernel: false,
    };
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--kernel") {
        o.kernel = true;
        args.remove(i);
    }
    for pair in args.chunks(2) {
        let value = pair
            .get(1)
            .ok_or_else(|| anyhow!("{} needs a value", pair[0]))?;
        match pair[0].as_str() {
            "--rounds" => o.rounds = value.parse()?,
            "--seconds" => o.seconds = value.parse()?,
            "--clients" => o.clients = value.parse()?,
            "--idle" => o.idle = value.parse()?,
            other => bail!("unknown option {other} (see bench/proxy.rs)"),
        }
    }
    Ok(o)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    Ours,
    Haproxy,
    /// stolon-proxy --kernel-forwarding (with --kernel).
    OursKernel,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Ours => "stolon-proxy",
            Via::Haproxy => "haproxy",
            Via::OursKernel => "stolon (kernel)",
        }
    }
}

struct Setup {
    local: Local,
    pg_port: u16,
    proxy_port: u16,
    haproxy_port: u16,
    proxy_pid: i32,
    haproxy: Child,
    /// The --kernel-forwarding proxy and its port.
    kernel_proxy: Option<(Child, u16)>,
}

impl Setup {
    fn all(&self) -> Vec<Via> {
        let mut all = vec![Via::Direct, Via::Ours, Via::Haproxy];
        if self.kernel_proxy.is_some() {
            all.push(Via::OursKernel);
        }
        all
    }
    fn port(&self, via: Via) -> u16 {
        match via {
            Via::Direct => self.pg_port,
            Via::Ours => self.proxy_port,
            Via::Haproxy => self.haproxy_port,
            Via::OursKernel => self.kernel_proxy.as_ref().map_or(0, |(_, port)| *port),
        }
    }
    fn pid(&self, via: Via) -> Option<i32> {
        match via {
            Via::Direct => None,
            Via::Ours => Some(self.proxy_pid),
            Via::Haproxy => Some(self.haproxy.id() as i32),
            Via::OursKernel => self.kernel_proxy.as_ref().map(|(c, _)| c.id() as i32),
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.haproxy.kill();
        let _ = self.haproxy.wait();
        if let Some((child, _)) = &mut self.kernel_proxy {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// utime+stime of a process, in seconds.
fn cpu_seconds(pid: i32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    Ok(ticks as f64 / hz)
}

/// Busy time of the whole machine, all CPUs (user, nice, system, irq, softirq, steal), in
/// seconds. It counts what a proxy's own CPU time does not: the kernel threads that move bytes
/// for `--kernel-forwarding`, and what each proxy costs its clients and PostgreSQL.
fn machine_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("no cpu line in /proc/stat"))?;
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    Ok(busy as f64 / hz)
}

fn rss_kib(pid: i32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("bad VmRSS line"))?
        .parse()?)
}

fn pgbench(setup: &Setup, port: u16, args: &[&str]) -> Result<String> {
    let out = Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", setup.local.var("SU_USER")?])
        .args(args)
        .arg("postgres")
        .env("PGPASSWORD", setup.local.su_password()?)
        .output()
        .context("running pgbench (postgresql-client)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "pgbench {args:?} on port {port} failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text)
}

fn field(report: &str, prefix: &str) -> Result<f64> {
    let line = report
        .lines()
        .find(|l| l.starts_with(prefix))
        .ok_or_else(|| anyhow!("pgbench printed no {prefix:?}:\n{report}"))?;
    let value = line[prefix.len()..]
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("empty {prefix:?}"))?;
    Ok(value.parse()?)
}

#[derive(Default, Clone)]
struct Sample {
    tps: f64,
    latency_ms: f64,
    /// Proxy CPU per transaction; none for direct.
    cpu_us: Option<f64>,
    /// The whole machine's busy CPU per transaction (pgbench and PostgreSQL included).
    machine_us: f64,
}

fn run_workload(setup: &Setup, via: Via, args: &[&str], o: &Options) -> Result<Sample> {
    let seconds = o.seconds.to_string();
    let clients = o.clients.to_string();
    let mut all = vec!["-n", "-T", &seconds, "-c", &clients, "-j", "2"];
    all.extend_from_slice(args);
    let before = setup.pid(via).map(cpu_seconds).transpose()?;
    let machine_before = machine_busy_seconds()?;
    let report = pgbench(setup, setup.port(via), &all)?;
    let machine_after = machine_busy_seconds()?;
    let after = setup.pid(via).map(cpu_seconds).transpose()?;
    let transactions = field(&report, "number of transactions actually processed: ")?;
    Ok(Sample {
        tps: field(&report, "tps = ")?,
        latency_ms: field(&report, "latency average = ")?,
        cpu_us: before
            .zip(after)
            .map(|(b, a)| (a - b) * 1e6 / transactions.max(1.0)),
        machine_us: (machine_after - machine_before) * 1e6 / transactions.max(1.0),
    })
}

fn med(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    let mut v: Vec<f64> = samples.iter().filter_map(f).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(median(&v))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn workloads(setup: &Setup, o: &Options) -> Result<()> {
    let kinds: [(&str, &[&str]); 3] = [
        ("select-only (-S)", &["-S"]),
        ("connect per transaction (-S -C)", &["-S", "-C"]),
        (
            "simple-protocol writes (-N -M simple)",
            &["-N", "-M", "simple"],
        ),
    ];
    for (name, args) in kinds {
        let all = setup.all();
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); all.len()];
        for round in 1..=o.rounds {
            for (i, &via) in all.iter().enumerate() {
                let s = match run_workload(setup, via, args, o) {
                    Ok(s) => s,
                    Err(e) => {
                        // One failed sample is reported and left out, not the whole run lost.
                        eprintln!("  {name} round {round} {}: FAILED: {e:#}", via.name());
                        continue;
                    }
                };
                eprintln!(
                    "  {name} round {round} {:<12} tps {:>9.0}  cpu/tx {} µs  machine/tx {:.1} µs",
                    via.name(),
                    s.tps,
                    opt(s.cpu_us, 1),
                    s.machine_us
                );
                samples[i].push(s);
            }
        }
        let tps: Vec<f64> = samples
            .iter()
            .map(|s| med(s, |x| Some(x.tps)).unwrap_or(0.0))
            .collect();
        println!(
            "\n{name}: {} clients, {} s x {} rounds, medians",
            o.clients, o.seconds, o.rounds
        );
        println!(
            "{:<16} {:>10} {:>13} {:>10} {:>14} {:>16}",
            "via", "tps", "latency (ms)", "/direct", "proxy CPU/tx", "machine CPU/tx"
        );
        let machine: Vec<f64> = samples
            .iter()
            .map(|s| med(s, |x| Some(x.machine_us)).unwrap_or(0.0))
            .collect();
        for (i, &via) in all.iter().enumerate() {
            println!(
                "{:<16} {:>10.0} {:>13.3} {:>10.3} {:>11} µs {:>13.1} µs",
                via.name(),
                tps[i],
                med(&samples[i], |x| Some(x.latency_ms)).unwrap_or(0.0),
                tps[i] / tps[0],
                opt(med(&samples[i], |x| x.cpu_us), 1),
                machine[i],
            );
        }
        let cpu_haproxy = med(&samples[2], |x| x.cpu_us);
        for (i, label) in [(1, "ours"), (3, "ours (kernel)")] {
            if i >= all.len() {
                continue;
            }
            let cpu = med(&samples[i], |x| x.cpu_us);
            println!(
                "{label}/haproxy: tps {:.3}, proxy CPU per transaction {}, machine CPU per transaction {:.3}",
                tps[i] / tps[2],
                opt(cpu.zip(cpu_haproxy).map(|(a, b)| a / b), 3),
                machine[i] / machine[2]
            );
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn connect_times(setup: &Setup) -> Result<()> {
    const SAMPLES: usize = 300;
    let all = setup.all();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); all.len()];
    for _ in 0..SAMPLES {
        for (i, &via) in all.iter().enumerate() {
            let cfg = setup.local.pg_config(setup.port(via))?;
            let start = Instant::now();
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
            times[i].push(start.elapsed().as_secs_f64() * 1000.0);
            drop(client);
            let _ = conn.await;
        }
    }
    println!("\nnew connection (TCP + startup + SCRAM), {SAMPLES} each, alternating");
    println!("{:<16} {:>9} {:>9}", "via", "p50 (ms)", "p99 (ms)");
    for (i, &via) in all.iter().enumerate() {
        times[i].sort_by(f64::total_cmp);
        println!(
            "{:<16} {:>9.3} {:>9.3}",
            via.name(),
            percentile(&times[i], 0.5),
            percentile(&times[i], 0.99)
        );
    }
    Ok(())
}

async fn client_backends(setup: &Setup) -> Result<i64> {
    let (client, conn) = setup
        .local
        .pg_config(setup.pg_port)?
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "select count(*) from pg_stat_activity where backend_type = 'client backend'",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

async fn idle_connections(setup: &Setup, n: usize) -> Result<()> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], setup.proxy_port));
    let rss_before = rss_kib(setup.proxy_pid)?;
    let backends_before = client_backends(setup).await?;
    let started = Instant::now();
    let mut idle = Vec::with_capacity(n);
    let mut failed = 0usize;
    // In batches, so the listen backlog never overflows (a dropped SYN costs a 1 s retry).
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let dials = chunk.iter().map(|_| TcpStream::connect(addr));
        for r in futures_join_all(dials).await {
            match r {
                Ok(s) => idle.push(s),
                Err(_) => failed += 1,
            }
        }
    }
    let opened = started.elapsed();
    // Let the proxy accept the last ones before measuring it.
    let fds_wanted = idle.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(setup.proxy_pid)? < fds_wanted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_after = rss_kib(setup.proxy_pid)?;
    let backends_during = client_backends(setup).await? - 1;
    let cfg = setup.local.pg_config(setup.proxy_port)?;
    let fresh_start = Instant::now();
    let fresh = match cfg.connect(tokio_postgres::NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client.simple_query("select 1").await.map(|_| ())
        }
        Err(e) => Err(e),
    };
    let fresh_ms = fresh_start.elapsed().as_secs_f64() * 1000.0;
    println!(
        "\n{} idle client connections through stolon-proxy ({failed} failed to open, {:.1} s to open)",
        idle.len(),
        opened.as_secs_f64()
    );
    println!(
        "proxy RSS: {rss_before} KiB before, {rss_after} KiB with them ({:.2} KiB each); proxy fds: {}",
        (rss_after as f64 - rss_before as f64) / idle.len().max(1) as f64,
        open_fds(setup.proxy_pid)?
    );
    println!(
        "PostgreSQL client backends: {backends_before} before, {backends_during} with them (the bench's own query excluded)"
    );
    match fresh {
        Ok(()) => println!("a fresh client through the proxy: served in {fresh_ms:.1} ms"),
        Err(e) => println!("a fresh client through the proxy: FAILED after {fresh_ms:.1} ms: {e}"),
    }
    drop(idle);
    Ok(())
}

fn open_fds(pid: i32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Joins dials concurrently without another dependency: one task each.
async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

fn start_haproxy(local: &Local, port: u16, pg_port: u16) -> Result<Child> {
    let cfg = format!(
        "global\n  maxconn 4000\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\
         listen postgres\n  bind 127.0.0.1:{port}\n  server master 127.0.0.1:{pg_port}\n"
    );
    let path = local.state.join("haproxy.cfg");
    std::fs::write(&path, cfg)?;
    Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .spawn()
        .context("starting haproxy (apt-get install haproxy)")
}

/// A second stolon-proxy of the same cluster, from the binaries the script built.
fn start_kernel_proxy(local: &Local, port: u16) -> Result<Child> {
    let log = std::fs::File::create(local.state.join("logs/proxy-kernel.log"))?;
    Command::new(local.state.join("bin/stolon-proxy"))
        .args(["--cluster-name", local.var("CLUSTER_NAME")?])
        .args(["--store-backend", "etcdv3", "--store-endpoints"])
        .arg(local.var("ETCD_ENDPOINT")?)
        .args(["--listen-address", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--kernel-forwarding")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting stolon-proxy --kernel-forwarding")
}

async fn wait_serving(local: &Local, port: u16) -> Result<()> {
    let cfg = local.pg_config(port)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((client, conn)) = cfg.connect(tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            if client.simple_query("select 1").await.is_ok() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("nothing serves on port {port} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The cluster's processes inherit a soft limit of 1024 and the hard one (raised for the idle
/// test when this process may); this process then raises its own soft limit for its idle
/// clients.
fn limit_files_like_systemd(idle: usize) -> Result<u64> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let needed = idle as u64 + 1024;
    let hard = if hard < needed && setrlimit(Resource::RLIMIT_NOFILE, needed, needed).is_ok() {
        needed
    } else {
        hard
    };
    if hard < needed {
        eprintln!(
            "the hard open-file limit is {hard}: fewer than --idle {idle} idle clients will open"
        );
    }
    setrlimit(Resource::RLIMIT_NOFILE, 1024.min(hard), hard)?;
    Ok(hard)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let o = options()?;
    let hard = limit_files_like_systemd(o.idle)?;
    // pgbench saturates the CPUs, etcd included: with the demo's 2s sleepInterval the keeper
    // may miss its publication deadline and fence its own master mid-run (it did, on 2 cores).
    let mut settings = vec![
        ("STOLON_LOCAL_KEEPERS", "1".into()),
        ("STOLON_LOCAL_SENTINELS", "1".into()),
        ("STOLON_SLEEP_INTERVAL", "5s".into()),
        ("STOLON_FAIL_INTERVAL", "20s".into()),
    ];
    if o.kernel {
        settings.push(("STOLON_CARGO_FEATURES", "kernel-forwarding".into()));
    }
    let mut local = Local::new("/tmp/stolon-bench-proxy", 26530, settings);
    local.script("purge", true)?;
    local.script("up", false)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    local.load_env()?;
    let base = local.base_port()?;
    // scripts/local-cluster.sh: keeper i listens on base+3+i; haproxy takes base+20.
    let pg_port = base + 3;
    let proxy_port: u16 = local.var("PROXY_PORT")?.parse()?;
    let proxy_pid = local.pid("proxy")?;
    let haproxy_port = base + 20;
    let haproxy = start_haproxy(&local, haproxy_port, pg_port)?;
    let kernel_proxy = if o.kernel {
        let port = base + 21;
        Some((start_kernel_proxy(&local, port)?, port))
    } else {
        None
    };
    let setup = Setup {
        local,
        pg_port,
        proxy_port,
        haproxy_port,
        proxy_pid,
        haproxy,
        kernel_proxy,
    };
    wait_serving(&setup.local, haproxy_port).await?;
    if let Some((_, port)) = setup.kernel_proxy {
        // A second proxy is enabled by the sentinel like the first (within a sleepInterval).
        wait_serving(&setup.local, port).await?;
    }
    let version = Command::new("haproxy").arg("-v").output()?;
    eprintln!(
        "{}",
        String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("")
    );
    let result = measure(&setup, &o).await;
    if std::env::var("BENCH_KEEP").as_deref() != Ok("1") {
        setup.local.script("down", true)?;
    }
    result
}

async fn measure(setup: &Setup, o: &Options) -> Result<()> {
    pgbench(setup, setup.pg_port, &["-i", "-q", "-s", PGBENCH_SCALE])?;
    workloads(setup, o)?;
    connect_times(setup).await?;
    if o.idle > 0 {
        idle_connections(setup, o.idle).await?;
    }
    Ok(())
}
