//! The one etcd launcher of the integration tests: a single member on free 127.0.0.1 ports with
//! its own data dir, optionally TLS with client certificates, killed (process group) on drop and
//! when the test process dies. Stopping keeps the data, so it can be started again.
//! [`EtcdCluster`]: several such members forming one etcd cluster.

use super::net::free_ports;
use super::procs::{Proc, RunAs};
use super::tls::Certs;
use super::wait::{wait_for, wait_until};
use nix::sys::signal::Signal;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use stolon::store::{StoreBackend, StoreConfig};

pub(crate) struct Etcd {
    pub client_port: u16,
    peer_port: u16,
    /// The member name (`it` when alone).
    name: String,
    /// `--initial-cluster`; None: this member alone.
    initial_cluster: Option<String>,
    /// More flags for etcd (e.g. `--quota-backend-bytes`), set before starting.
    pub extra_args: Vec<String>,
    data_dir: PathBuf,
    log: PathBuf,
    pub tls: Option<Certs>,
    /// `user:password` for etcdctl once etcd's authentication is on.
    pub etcdctl_user: Option<String>,
    proc: Option<Proc>,
    /// The temp dir holding data and log when the caller gave no base dir.
    _own_dir: Option<tempfile::TempDir>,
}

impl Etcd {
    /// Ports and files chosen in `base` (data in `etcd-data`, log `logs/etcd.log`), not started.
    pub(crate) fn reserve_in(base: &Path, tls: Option<Certs>) -> Etcd {
        fs::create_dir_all(base.join("logs")).unwrap();
        let ports = free_ports(2);
        Etcd {
            client_port: ports[0],
            peer_port: ports[1],
            name: "it".into(),
            initial_cluster: None,
            extra_args: Vec::new(),
            data_dir: base.join("etcd-data"),
            log: base.join("logs").join("etcd.log"),
            tls,
            etcdctl_user: None,
            proc: None,
            _own_dir: None,
        }
    }

    /// Started in `base` and answering.
    pub(crate) fn start_in(base: &Path, tls: Option<Certs>) -> Etcd {
        let mut e = Etcd::reserve_in(base, tls);
        e.start_again();
        e
    }

    /// Plain http in a temp dir of its own, not started (to test a store that is down at first).
    pub(crate) fn reserve() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Etcd::reserve_in(dir.path(), None);
        e._own_dir = Some(dir);
        e
    }

    /// Plain http in a temp dir of its own, started and answering.
    pub(crate) fn start() -> Etcd {
        let mut e = Etcd::reserve();
        e.start_again();
        e
    }

    pub(crate) fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd (SIGKILL, like a crash); the data dir stays.
    pub(crate) fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Sends `sig` to the running etcd (SIGSTOP/SIGCONT to freeze and thaw it).
    pub(crate) fn signal(&self, sig: Signal) {
        self.proc
            .as_ref()
            .expect("etcd is not running")
            .signal_group(sig);
    }

    /// Starts etcd on its ports and data dir and waits until it answers.
    pub(crate) fn start_again(&mut self) {
        self.spawn();
        self.wait_healthy();
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    /// Waits until this member answers a health check (a cluster member: until its cluster has
    /// a leader).
    pub(crate) fn wait_healthy(&self) {
        wait_until(Duration::from_secs(30), "etcd to answer", || {
            self.etcdctl(&["endpoint", "health"]).status.success()
        });
    }

    /// Starts etcd on its ports and data dir, without waiting.
    fn spawn(&mut self) {
        assert!(self.proc.is_none(), "etcd is already running");
        let peer = self.peer_url();
        let initial_cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={peer}", self.name));
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(self.endpoint())
            .arg("--advertise-client-urls")
            .arg(self.endpoint())
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--logger")
            .arg("zap")
            .args(&self.extra_args);
        if let Some(c) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&c.server_cert)
                .arg("--key-file")
                .arg(&c.server_key)
                .arg("--trusted-ca-file")
                .arg(&c.ca_cert)
                .arg("--client-cert-auth");
        }
        self.proc = Some(Proc::spawn("etcd", cmd, &self.log, RunAs::Me));
    }

    /// How many watches this member serves (`etcd_debugging_mvcc_watcher_total` of its
    /// /metrics; plain http members only). None when it does not answer.
    pub(crate) fn watchers(&self) -> Option<u64> {
        use std::io::{Read, Write};
        let addr = format!("127.0.0.1:{}", self.client_port);
        let mut conn = std::net::TcpStream::connect(addr).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut body = String::new();
        conn.read_to_string(&mut body).ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }

    /// `endpoint status` of this member: (its member id, the leader it knows; 0 for none).
    /// None when it does not answer.
    pub(crate) fn member_status(&self) -> Option<(u64, u64)> {
        let out = self.etcdctl(&["endpoint", "status", "--write-out=json"]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let status = &v.get(0)?["Status"];
        Some((
            status["header"]["member_id"].as_u64()?,
            status["leader"].as_u64()?,
        ))
    }

    /// The last `n` lines of etcd's log (for failure messages).
    pub(crate) fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub(crate) fn etcdctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoint())
            .arg("--command-timeout=2s");
        if let Some(user) = &self.etcdctl_user {
            cmd.arg("--user").arg(user);
        }
        if let Some(c) = &self.tls {
            cmd.arg("--cacert")
                .arg(&c.ca_cert)
                .arg("--cert")
                .arg(&c.client_cert)
                .arg("--key")
                .arg(&c.client_key);
        }
        cmd.args(args).output().unwrap()
    }

    /// `etcdctl args`, panicking with its stderr unless it succeeds; returns stdout.
    pub(crate) fn etcdctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The keys under `prefix` ("" for every key in the store).
    pub(crate) fn keys(&self, prefix: &str) -> Vec<String> {
        self.etcdctl_ok(&["get", prefix, "--prefix", "--keys-only"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub(crate) fn get(&self, key: &str) -> Option<String> {
        let v = self
            .etcdctl_ok(&["get", key, "--print-value-only"])
            .trim_end()
            .to_string();
        (!v.is_empty()).then_some(v)
    }

    pub(crate) fn put(&self, key: &str, value: &str) {
        self.etcdctl_ok(&["put", key, value]);
    }

    /// The raw cluster data of `cluster` under the default store prefix.
    pub(crate) fn cluster_data(&self, cluster: &str) -> Option<String> {
        self.get(&format!("stolon/cluster/{cluster}/clusterdata"))
    }

    /// The store flags every binary takes to reach this etcd as `cluster` (TLS files included).
    pub(crate) fn store_flags(&self, cluster: &str) -> Vec<String> {
        let mut a = vec![
            "--cluster-name".to_string(),
            cluster.to_string(),
            "--store-backend".into(),
            "etcdv3".into(),
            "--store-endpoints".into(),
            self.endpoint(),
        ];
        if let Some(c) = &self.tls {
            for (flag, p) in [
                ("--store-ca-file", &c.ca_cert),
                ("--store-cert-file", &c.client_cert),
                ("--store-key", &c.client_key),
            ] {
                a.push(flag.into());
                a.push(p.display().to_string());
            }
        }
        a
    }

    /// [`Etcd::store_flags`] with a `--store-timeout`.
    pub(crate) fn flags(&self, cluster: &str, store_timeout: &str) -> Vec<String> {
        let mut a = self.store_flags(cluster);
        a.extend(["--store-timeout".to_string(), store_timeout.to_string()]);
        a
    }
}

/// The store client's settings for `cluster` on `endpoints` (as `--store-endpoints` takes
/// them), without TLS.
pub(crate) fn store_config(endpoints: &str, cluster: &str, timeout: Duration) -> StoreConfig {
    StoreConfig {
        backend: StoreBackend::Etcdv3,
        endpoints: StoreConfig::endpoints_from_flag(endpoints),
        timeout,
        prefix: "stolon/cluster".into(),
        cluster_name: cluster.into(),
        cert_file: None,
        key_file: None,
        ca_file: None,
        skip_tls_verify: false,
        credentials: None,
    }
}

/// Several etcd members forming one cluster, each on its own free ports and data dir under one
/// temp dir; every member is killed on drop.
pub(crate) struct EtcdCluster {
    pub members: Vec<Etcd>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// `n` members, started together and answering.
    pub(crate) fn start(n: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut members: Vec<Etcd> = (0..n)
            .map(|i| {
                let mut m = Etcd::reserve_in(&dir.path().join(format!("m{i}")), None);
                m.name = format!("m{i}");
                m
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster = Some(initial_cluster.clone());
            m.extra_args.extend([
                "--initial-cluster-token".to_string(),
                "it-cluster".to_string(),
            ]);
        }
        // Each member waits for the others to form a quorum: start all, then wait.
        for m in &mut members {
            m.spawn();
        }
        for m in &members {
            m.wait_healthy();
        }
        EtcdCluster { members, _dir: dir }
    }

    /// `--store-endpoints` naming every member.
    pub(crate) fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(Etcd::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the leader once every member in `among` answers and names the same one of
    /// them (waits for that).
    pub(crate) fn leader_among(&self, among: &[usize]) -> usize {
        wait_for(Duration::from_secs(30), "an etcd leader", || {
            let statuses: Option<Vec<(u64, u64)>> = among
                .iter()
                .map(|&i| self.members[i].member_status())
                .collect();
            let statuses = statuses?;
            let leader = statuses.first()?.1;
            if leader == 0 || statuses.iter().any(|s| s.1 != leader) {
                return None;
            }
            statuses
                .iter()
                .position(|s| s.0 == leader)
                .map(|pos| among[pos])
        })
    }

    /// [`EtcdCluster::leader_among`] all members.
    pub(crate) fn leader(&self) -> usize {
        let all: Vec<usize> = (0..self.members.len()).collect();
        self.leader_among(&all)
    }

    /// The last log lines of every member (for failure messages).
    pub(crate) fn log_tails(&self, n: usize) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {} ---\n{}", m.name, m.log_tail(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// etcd's NOSPACE alarm on a plain-http etcd started with a small `--quota-backend-bytes`:
/// filled until it refuses writes, then cleared as an operator would.
pub(crate) mod full {
    use etcd_client::{
        AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions, DeleteOptions,
    };

    const FILLER: &str = "filler/";

    /// Puts 100 kB values until etcd refuses one with "database space exceeded".
    pub(crate) async fn fill(endpoint: &str) {
        let mut raw = Client::connect([endpoint], None).await.unwrap();
        let value = vec![b'x'; 100_000];
        for i in 0.. {
            assert!(i < 2000, "no NOSPACE alarm after {i} values");
            if let Err(e) = raw.put(format!("{FILLER}{i}"), value.clone(), None).await {
                assert!(e.to_string().contains("database space exceeded"), "{e}");
                return;
            }
        }
    }

    /// Deletes the filler, compacts, defragments and disarms the alarm.
    pub(crate) async fn clear(endpoint: &str) {
        let mut raw = Client::connect([endpoint], None).await.unwrap();
        let resp = raw
            .delete(FILLER, Some(DeleteOptions::new().with_prefix()))
            .await
            .unwrap();
        let rev = resp.header().unwrap().revision();
        raw.compact(rev, Some(CompactionOptions::new().with_physical()))
            .await
            .unwrap();
        raw.defragment().await.unwrap();
        let alarms = raw
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .unwrap();
        for alarm in alarms.alarms() {
            let mut member = AlarmOptions::new();
            member.with_member(alarm.member_id());
            raw.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(member))
                .await
                .unwrap();
        }
    }
}
