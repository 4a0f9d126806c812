//! Shared support of the integration tests (tests/it/main.rs). The sub-modules hold the etcd launcher, free ports,
//! waits, TLS certificates, owned child processes and the CLI and systemd helpers; this file is
//! the cluster harness: a real etcd, real PostgreSQL 15 and
//! the crate's real binaries, each test with its own ports and temp dir. Every process started
//! here lives in its own process group and is SIGKILLed (group, then postmaster) on drop, also
//! when the test panics; on failure the process logs are dumped and the temp dir is kept.

pub(crate) mod cli;
pub(crate) mod etcd;
pub(crate) mod fixtures;
pub(crate) mod net;
pub(crate) mod pg;
pub(crate) mod procs;
pub(crate) mod scrape;
pub(crate) mod systemd;
pub(crate) mod tls;
pub(crate) mod wait;

// The short paths the tests use.
pub(crate) use etcd::Etcd;
pub(crate) use net::{connection_refused, free_port, free_ports};
pub(crate) use wait::{stays_true, wait_for, wait_until, wait_until_async};

use procs::{Proc, RunAs};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::LazyLock;
use std::time::Duration;

/// PostgreSQL server binaries: `STOLON_TEST_PG_BIN` (scripts/test.sh sets it), else PG 15's.
pub(crate) fn pg_bin() -> String {
    std::env::var("STOLON_TEST_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
}

/// A temp dir `user` owns with a socket directory `sock` in it, for a PostgreSQL run as `user`.
pub(crate) fn pg_temp_dir(user: RunAs) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    user.chown(dir.path());
    let sock = dir.path().join("sock");
    fs::create_dir(&sock).unwrap();
    user.chown(&sock);
    dir
}

pub(crate) const SU_USER: &str = "postgres";
pub(crate) const SU_PASSWORD: &str = "supass-it";
pub(crate) const REPL_USER: &str = "repluser";
pub(crate) const REPL_PASSWORD: &str = "replpass-it";

/// The binaries under test, each from `bin`.
pub(crate) static KEEPER: LazyLock<PathBuf> = LazyLock::new(|| bin("stolon-keeper"));
pub(crate) static SENTINEL: LazyLock<PathBuf> = LazyLock::new(|| bin("stolon-sentinel"));
pub(crate) static PROXY: LazyLock<PathBuf> = LazyLock::new(|| bin("stolon-proxy"));
pub(crate) static CTL: LazyLock<PathBuf> = LazyLock::new(|| bin("stolonctl"));

/// Binaries of this crate, or of `STOLON_TEST_BIN_DIR` when set (to test a release build or the
/// installed package: `STOLON_TEST_BIN_DIR=/usr/bin scripts/test.sh`). `option_env!` so the tests
/// still compile while a binary is missing; running them then fails saying which one.
pub(crate) fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("STOLON_TEST_BIN_DIR").filter(|d| !d.is_empty()) {
        return Path::new(&dir).join(name);
    }
    let p = match name {
        "stolon-keeper" => option_env!("CARGO_BIN_EXE_stolon-keeper"),
        "stolon-sentinel" => option_env!("CARGO_BIN_EXE_stolon-sentinel"),
        "stolon-proxy" => option_env!("CARGO_BIN_EXE_stolon-proxy"),
        "stolonctl" => option_env!("CARGO_BIN_EXE_stolonctl"),
        _ => None,
    };
    match p {
        Some(p) => PathBuf::from(p),
        None => panic!("binary {name} is not built by this crate (src/bin/{name}.rs missing?)"),
    }
}

/// Writes a secret file with mode 0600, owned by whoever will read it.
pub(crate) fn write_secret(path: &Path, content: &str, run_as: RunAs) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    run_as.chown(path);
}

/// What differs between tests when building a cluster.
pub(crate) struct ClusterBuilder {
    name: String,
    keepers: usize,
    sentinels: usize,
    proxy: bool,
    spec: Value,
    tls: bool,
    etcd_args: Vec<String>,
    allowed_errors: Vec<String>,
    proxy_args: Vec<String>,
    read_only_proxy: bool,
}

/// Fast timings: a failed master is noticed in seconds, the proxy fails closed in seconds.
pub(crate) fn default_spec() -> Value {
    json!({
        "initMode": "new",
        "sleepInterval": "1s",
        "requestTimeout": "4s",
        "failInterval": "4s",
        "convergenceTimeout": "30s",
        "initTimeout": "90s",
        "syncTimeout": "90s",
        "dbWaitReadyTimeout": "30s",
        "proxyCheckInterval": "1s",
        "proxyTimeout": "4s",
    })
}

impl ClusterBuilder {
    pub(crate) fn new(name: &str) -> ClusterBuilder {
        ClusterBuilder {
            name: name.to_string(),
            keepers: 3,
            sentinels: 2,
            proxy: true,
            spec: default_spec(),
            tls: false,
            allowed_errors: Vec::new(),
            etcd_args: Vec::new(),
            proxy_args: Vec::new(),
            read_only_proxy: false,
        }
    }
    /// More flags for the proxy (e.g. `--read-only-fallback-master`).
    pub(crate) fn proxy_args(mut self, args: &[&str]) -> Self {
        self.proxy_args = args.iter().map(|a| a.to_string()).collect();
        self
    }
    /// Gives the proxy a read-only listener, on [`Cluster::read_only_port`].
    pub(crate) fn read_only_proxy(mut self) -> Self {
        self.read_only_proxy = true;
        self
    }
    pub(crate) fn keepers(mut self, n: usize) -> Self {
        self.keepers = n;
        self
    }
    pub(crate) fn sentinels(mut self, n: usize) -> Self {
        self.sentinels = n;
        self
    }
    pub(crate) fn proxy(mut self, on: bool) -> Self {
        self.proxy = on;
        self
    }
    /// Merges `patch` (an object) over the default spec.
    pub(crate) fn spec(mut self, patch: Value) -> Self {
        let obj = self.spec.as_object_mut().unwrap();
        for (k, v) in patch.as_object().expect("spec patch must be an object") {
            obj.insert(k.clone(), v.clone());
        }
        self
    }
    /// More flags for etcd (e.g. a small `--quota-backend-bytes`).
    pub(crate) fn etcd_args(mut self, args: &[&str]) -> Self {
        self.etcd_args = args.iter().map(|a| a.to_string()).collect();
        self
    }
    pub(crate) fn etcd_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// ERROR lines containing one of `texts` do not fail the test: the faults it injects make
    /// the roles report them. Any other ERROR line a role logs fails it ([`Cluster`]'s drop).
    pub(crate) fn allow_errors(mut self, texts: &[&str]) -> Self {
        self.allowed_errors
            .extend(texts.iter().map(|t| t.to_string()));
        self
    }

    pub(crate) fn start(self) -> Cluster {
        procs::reap_orphans_of_dead_tests(&std::env::temp_dir());
        let dir = tempfile::Builder::new()
            .prefix(&format!("stolon-it-{}-", self.name))
            .tempdir()
            .unwrap();
        // Keepers may run as another user: they must be able to traverse the base dir.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let base = dir.path().to_path_buf();
        fs::create_dir_all(base.join("logs")).unwrap();
        // Lets a later test stop this one's postgres if this process dies without its drop.
        fs::write(base.join("owner.pid"), std::process::id().to_string()).unwrap();
        let keeper_user = RunAs::keeper_user();
        let certs = self
            .tls
            .then(|| tls::Certs::generate(&base.join("tls"), keeper_user));
        let mut etcd = Etcd::reserve_in(&base, certs);
        etcd.extra_args = self.etcd_args;
        etcd.start_again();

        let secrets = base.join("secrets");
        fs::create_dir_all(&secrets).unwrap();
        fs::set_permissions(&secrets, fs::Permissions::from_mode(0o755)).unwrap();
        let su_pw = secrets.join("su-password");
        let repl_pw = secrets.join("repl-password");
        write_secret(&su_pw, SU_PASSWORD, keeper_user);
        write_secret(&repl_pw, REPL_PASSWORD, keeper_user);
        let spec_file = base.join("initial-cluster-spec.json");
        fs::write(&spec_file, serde_json::to_vec_pretty(&self.spec).unwrap()).unwrap();

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut c = Cluster {
            name: self.name,
            base: base.clone(),
            dir: Some(dir),
            etcd,
            keepers: BTreeMap::new(),
            sentinels: Vec::new(),
            proxy: None,
            proxy_port: free_ports(1)[0],
            read_only_port: self.read_only_proxy.then(|| free_ports(1)[0]),
            proxy_args: self.proxy_args,
            su_pw,
            repl_pw,
            spec_file,
            keeper_user,
            rt,
            allowed_errors: self.allowed_errors,
        };
        for i in 0..self.keepers {
            let uid = format!("keeper{i}");
            c.add_keeper(&uid, &[]);
        }
        for i in 0..self.sentinels {
            c.start_sentinel(i);
        }
        if self.proxy {
            c.start_proxy();
        }
        c
    }
}

pub(crate) struct Keeper {
    /// The name the test knows it by (its key in `Cluster::keepers`, its log file).
    pub uid: String,
    /// What it is started with as `--uid`: its name, except for a keeper started as an
    /// impostor of another (`add_keeper_with_uid`).
    pub flag_uid: String,
    pub data_dir: PathBuf,
    pub pg_port: u16,
    extra_args: Vec<String>,
    proc: Option<Proc>,
}

impl Keeper {
    pub(crate) fn postmaster_pid(&self) -> Option<i32> {
        procs::postmaster_pid(&self.data_dir.join("postgres"))
    }
}

/// Rows of a simple query, every value as text (NULL = None).
pub(crate) type Rows = Vec<Vec<Option<String>>>;

pub(crate) struct Cluster {
    pub name: String,
    pub base: PathBuf,
    dir: Option<tempfile::TempDir>,
    pub etcd: Etcd,
    pub keepers: BTreeMap<String, Keeper>,
    sentinels: Vec<Proc>,
    proxy: Option<Proc>,
    pub proxy_port: u16,
    /// The proxy's read-only port ([`ClusterBuilder::read_only_proxy`]).
    pub read_only_port: Option<u16>,
    proxy_args: Vec<String>,
    su_pw: PathBuf,
    repl_pw: PathBuf,
    spec_file: PathBuf,
    keeper_user: RunAs,
    rt: tokio::runtime::Runtime,
    allowed_errors: Vec<String>,
}

impl Cluster {
    fn log(&self, name: &str) -> PathBuf {
        self.base.join("logs").join(format!("{name}.log"))
    }

    /// Common flags every role and stolonctl get.
    pub(crate) fn store_args(&self) -> Vec<String> {
        self.etcd.store_flags(&self.name)
    }

    /// Registers and starts a keeper with a fresh data dir and pg port.
    pub(crate) fn add_keeper(&mut self, uid: &str, extra_args: &[&str]) {
        self.add_keeper_with_uid(uid, uid, extra_args);
    }

    /// Registers and starts a keeper known as `name` with a fresh data dir and pg port, but
    /// started with `--uid flag_uid` (e.g. the uid of another keeper).
    pub(crate) fn add_keeper_with_uid(&mut self, name: &str, flag_uid: &str, extra_args: &[&str]) {
        let uid = name;
        let kdir = self.base.join(uid);
        fs::create_dir_all(&kdir).unwrap();
        fs::set_permissions(&kdir, fs::Permissions::from_mode(0o700)).unwrap();
        self.keeper_user.chown(&kdir);
        let k = Keeper {
            uid: uid.to_string(),
            flag_uid: flag_uid.to_string(),
            data_dir: kdir,
            pg_port: free_ports(1)[0],
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            proc: None,
        };
        self.keepers.insert(uid.to_string(), k);
        self.start_keeper(uid);
    }

    /// (Re)starts a registered keeper on its data dir and port.
    pub(crate) fn start_keeper(&mut self, uid: &str) {
        let args = self.store_args();
        let log = self.log(uid);
        let k = self.keepers.get_mut(uid).expect("unknown keeper");
        assert!(k.proc.is_none(), "keeper {uid} is already running");
        let mut cmd = Command::new(bin("stolon-keeper"));
        cmd.args(&args)
            .arg("--uid")
            .arg(&k.flag_uid)
            .arg("--data-dir")
            .arg(&k.data_dir)
            .arg("--pg-listen-address")
            .arg("127.0.0.1")
            .arg("--pg-port")
            .arg(k.pg_port.to_string())
            .arg("--pg-bin-path")
            .arg(pg_bin())
            .arg("--pg-repl-username")
            .arg(REPL_USER)
            .arg("--pg-su-username")
            .arg(SU_USER)
            .arg("--pg-su-passwordfile")
            .arg(&self.su_pw)
            .args(&k.extra_args)
            .current_dir(&k.data_dir)
            .env("HOME", &k.data_dir)
            // One setting from the environment, as a unit file's Environment= would give it (and
            // a variable PostgreSQL must not inherit: tests/it/cluster_init.rs).
            .env("STKEEPER_PG_REPL_PASSWORDFILE", &self.repl_pw);
        k.proc = Some(Proc::spawn(uid, cmd, &log, self.keeper_user));
    }

    /// SIGKILLs the keeper (its process group) and the postgres it started.
    pub(crate) fn kill_keeper(&mut self, uid: &str) {
        let k = self.keepers.get_mut(uid).expect("unknown keeper");
        let pm = k.postmaster_pid();
        if let Some(mut p) = k.proc.take() {
            p.kill();
        }
        procs::kill_postmaster(&k.data_dir.join("postgres"), pm);
    }

    /// Sends `sig` to the keeper process only, not to the PostgreSQL it started (SIGSTOP,
    /// SIGCONT, SIGKILL: a frozen or dead keeper).
    pub(crate) fn signal_keeper_process(&self, uid: &str, sig: nix::sys::signal::Signal) {
        let k = &self.keepers[uid];
        let p = k.proc.as_ref().expect("keeper not running");
        procs::signal_pid(p.pid(), sig);
    }

    /// Waits up to `timeout` for keeper `uid`'s process to exit by itself.
    pub(crate) fn wait_keeper_exit(
        &mut self,
        uid: &str,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let k = self.keepers.get_mut(uid).expect("unknown keeper");
        let status = k.proc.as_mut()?.wait_exit(timeout);
        if status.is_some() {
            k.proc = None;
        }
        status
    }

    /// The keeper's log so far.
    pub(crate) fn keeper_log(&self, uid: &str) -> String {
        fs::read_to_string(self.log(uid)).unwrap_or_default()
    }

    pub(crate) fn keeper_running(&self, uid: &str) -> bool {
        self.keepers[uid].proc.is_some()
    }

    pub(crate) fn start_sentinel(&mut self, i: usize) {
        self.start_sentinel_with(i, &[]);
    }

    /// [`Cluster::start_sentinel`] with more flags.
    pub(crate) fn start_sentinel_with(&mut self, i: usize, extra_args: &[&str]) {
        let mut cmd = Command::new(bin("stolon-sentinel"));
        cmd.args(self.store_args())
            .arg("--initial-cluster-spec")
            .arg(&self.spec_file)
            .args(extra_args);
        let name = format!("sentinel{i}");
        let p = Proc::spawn(&name, cmd, &self.log(&name), RunAs::Me);
        self.sentinels.push(p);
    }

    /// SIGKILLs sentinel `i` (as started by `start_sentinel(i)`).
    pub(crate) fn kill_sentinel(&mut self, i: usize) {
        self.sentinels[i].kill();
    }

    /// Sentinel `i`'s log so far.
    pub(crate) fn sentinel_log(&self, i: usize) -> String {
        fs::read_to_string(self.log(&format!("sentinel{i}"))).unwrap_or_default()
    }

    pub(crate) fn start_proxy(&mut self) {
        assert!(self.proxy.is_none(), "proxy is already running");
        let mut cmd = Command::new(bin("stolon-proxy"));
        cmd.args(self.store_args())
            .arg("--listen-address")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.proxy_port.to_string());
        if let Some(port) = self.read_only_port {
            cmd.arg("--read-only-port").arg(port.to_string());
        }
        cmd.args(&self.proxy_args);
        self.proxy = Some(Proc::spawn("proxy", cmd, &self.log("proxy"), RunAs::Me));
    }

    /// Runs stolonctl with the cluster's store flags before `args`, the keepers' PostgreSQL
    /// first in its PATH: the one it checks pgParameters with (src/ctl/pgparams.rs).
    pub(crate) fn stolonctl(&self, args: &[&str]) -> Output {
        let path = std::env::var("PATH").unwrap_or_default();
        Command::new(bin("stolonctl"))
            .env("PATH", format!("{}:{path}", pg_bin()))
            .args(self.store_args())
            .args(args)
            .output()
            .unwrap()
    }

    /// Like `stolonctl`, panicking with its stderr unless it succeeds; returns stdout.
    pub(crate) fn stolonctl_ok(&self, args: &[&str]) -> String {
        let out = self.stolonctl(args);
        assert!(
            out.status.success(),
            "stolonctl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The cluster data, or None while it does not exist or the store is unreachable.
    pub(crate) fn try_clusterdata(&self) -> Option<Value> {
        let out = self.stolonctl(&["clusterdata", "read"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .filter(|v| !v.is_null())
    }

    pub(crate) fn clusterdata(&self) -> Value {
        self.try_clusterdata()
            .expect("stolonctl clusterdata read gave no cluster data")
    }

    /// db uid → keeper uid.
    pub(crate) fn db_keeper(cd: &Value, db: &str) -> Option<String> {
        cd["dbs"][db]["spec"]["keeperUID"]
            .as_str()
            .map(str::to_string)
    }

    /// keeper uid → its db uid, if it has one.
    pub(crate) fn keeper_db(cd: &Value, keeper: &str) -> Option<String> {
        cd["dbs"].as_object()?.iter().find_map(|(uid, db)| {
            (db["spec"]["keeperUID"].as_str() == Some(keeper)).then(|| uid.clone())
        })
    }

    /// The keeper the sentinel elected master (cluster.status.master), if any.
    pub(crate) fn master_keeper_in(cd: &Value) -> Option<String> {
        let db = cd["cluster"]["status"]["master"].as_str()?;
        if db.is_empty() {
            return None;
        }
        Self::db_keeper(cd, db)
    }

    pub(crate) fn master_keeper(&self) -> Option<String> {
        self.try_clusterdata()
            .and_then(|cd| Self::master_keeper_in(&cd))
    }

    pub(crate) fn keeper_by_port(&self, port: u16) -> Option<String> {
        self.keepers
            .values()
            .find(|k| k.pg_port == port)
            .map(|k| k.uid.clone())
    }

    fn pg_config(&self, port: u16) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(port)
            .user(SU_USER)
            .password(SU_PASSWORD)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(3));
        c
    }

    /// Runs `fut` on the cluster's runtime (e.g. raw etcd requests).
    pub(crate) fn rt_block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }

    /// Opens a session on `port` (the proxy or a keeper's postgres).
    pub(crate) fn connect(&self, port: u16) -> Result<Session, String> {
        let cfg = self.pg_config(port);
        let client = self.rt.block_on(async move {
            let (client, conn) =
                tokio::time::timeout(Duration::from_secs(5), cfg.connect(tokio_postgres::NoTls))
                    .await
                    .map_err(|_| format!("connect to port {port} timed out"))?
                    .map_err(|e| format!("connect to port {port}: {}", pg_error(&e)))?;
            tokio::spawn(conn);
            Ok::<_, String>(client)
        })?;
        Ok(Session {
            client,
            rt: self.rt.handle().clone(),
        })
    }

    pub(crate) fn connect_proxy(&self) -> Result<Session, String> {
        self.connect(self.proxy_port)
    }

    /// One query in a fresh session through the proxy.
    pub(crate) fn psql_via_proxy(&self, sql: &str) -> Result<Rows, String> {
        self.connect_proxy()?.query(sql)
    }

    /// One query in a fresh session directly on a keeper's postgres.
    pub(crate) fn psql_keeper(&self, uid: &str, sql: &str) -> Result<Rows, String> {
        self.connect(self.keepers[uid].pg_port)?.query(sql)
    }

    /// The keeper whose postgres a fresh proxy session lands on.
    pub(crate) fn proxy_backend(&self) -> Result<String, String> {
        let rows = self.psql_via_proxy("select inet_server_port()")?;
        let port: u16 = rows[0][0]
            .as_deref()
            .and_then(|p| p.parse().ok())
            .ok_or("inet_server_port() gave no port")?;
        self.keeper_by_port(port)
            .ok_or_else(|| format!("proxy routes to port {port}, which is no keeper's"))
    }

    /// Waits until the cluster is initialised: phase normal, a master elected, the proxy routing
    /// writes to it. Returns the master keeper uid.
    pub(crate) fn wait_master_serving(&self, timeout: Duration) -> String {
        wait_for(
            timeout,
            "a master elected, phase normal, and the proxy routing writes to it",
            || {
                let cd = self.try_clusterdata()?;
                if cd["cluster"]["status"]["phase"] != "normal" {
                    return None;
                }
                let master = Self::master_keeper_in(&cd)?;
                let backend = self.proxy_backend().ok()?;
                let ro = self.psql_via_proxy("select pg_is_in_recovery()").ok()?;
                (backend == master && ro[0][0].as_deref() == Some("f")).then_some(master)
            },
        )
    }

    /// Waits until the cluster data holds `n` dbs, every one healthy and converged (its
    /// generation reached by its keeper): only such standbys are eligible for election.
    pub(crate) fn wait_dbs_converged(&self, n: usize, timeout: Duration) {
        let what = format!("{n} healthy, converged dbs in the cluster data");
        wait_until(timeout, &what, || {
            let Some(cd) = self.try_clusterdata() else {
                return false;
            };
            let Some(dbs) = cd["dbs"].as_object() else {
                return false;
            };
            dbs.len() == n
                && dbs.values().all(|db| {
                    db["status"]["healthy"] == true
                        && db["generation"] == db["status"]["currentGeneration"]
                })
        });
    }

    /// Number of streaming standbys the given keeper's postgres reports.
    pub(crate) fn streaming_standbys(&self, uid: &str) -> Option<usize> {
        let rows = self
            .psql_keeper(
                uid,
                "select count(*) from pg_stat_replication where state = 'streaming'",
            )
            .ok()?;
        rows[0][0].as_deref()?.parse().ok()
    }

    /// Waits until `sql` run directly on keeper `uid` returns exactly `want` (first column).
    /// The keeper other than `uid` (in a two-keeper cluster, the standby of master `uid`).
    pub(crate) fn other_keeper(&self, uid: &str) -> String {
        self.keepers
            .keys()
            .find(|k| *k != uid)
            .cloned()
            .expect("a second keeper")
    }

    /// The db uid the sentinel gave `keeper`, waiting up to a minute for one.
    pub(crate) fn wait_keeper_db(&self, keeper: &str) -> String {
        wait_for(Duration::from_secs(60), "the keeper's db", || {
            Self::keeper_db(&self.try_clusterdata()?, keeper)
        })
    }

    /// Waits until `keeper` holds a db other than `not_db`, healthy, a standby following the
    /// current master; returns its uid.
    pub(crate) fn wait_healthy_standby(&self, keeper: &str, not_db: Option<&str>) -> String {
        wait_for(
            Duration::from_secs(150),
            &format!("{keeper} to be a healthy standby of the master"),
            || {
                let cd = self.try_clusterdata()?;
                let db = Self::keeper_db(&cd, keeper)?;
                let master_db = cd["cluster"]["status"]["master"].as_str().unwrap_or("");
                (Some(db.as_str()) != not_db
                    && cd["dbs"][&db]["spec"]["role"] == "standby"
                    && cd["dbs"][&db]["spec"]["followConfig"]["dbuid"] == master_db
                    && cd["dbs"][&db]["status"]["healthy"] == true)
                    .then_some(db)
            },
        )
    }

    /// Creates table `t (id int primary key, v text)` with row `(1, value)` through the proxy
    /// and waits until `standby` has it.
    pub(crate) fn replicate_first_row(&self, standby: &str, value: &str) {
        wait_until(
            Duration::from_secs(150),
            "the first write through the proxy",
            || {
                self.psql_via_proxy(&format!(
                    "create table if not exists t (id int primary key, v text); \
                 insert into t values (1, '{value}') on conflict do nothing"
                ))
                .is_ok()
            },
        );
        self.wait_keeper_rows(
            standby,
            "select v from t order by id",
            &[value],
            Duration::from_secs(150),
        );
    }

    pub(crate) fn wait_keeper_rows(&self, uid: &str, sql: &str, want: &[&str], timeout: Duration) {
        let what = format!("{sql:?} on {uid} to return {want:?}");
        wait_until(timeout, &what, || match self.psql_keeper(uid, sql) {
            Ok(rows) => {
                let got: Vec<Option<&str>> = rows.iter().map(|r| r[0].as_deref()).collect();
                got == want.iter().map(|w| Some(*w)).collect::<Vec<_>>()
            }
            Err(_) => false,
        });
    }

    /// Prints the tail of every process log (used when a test fails).
    /// ERROR lines of the role logs (keepers, sentinels, proxy) not matching an allowed text.
    /// PostgreSQL's own lines, which the keeper forwards at their severity (`postgres: …`),
    /// are the database's view and are not counted.
    fn unexpected_errors(&self) -> Vec<String> {
        let Ok(rd) = fs::read_dir(self.base.join("logs")) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        let mut found = Vec::new();
        for p in paths {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !["keeper", "sentinel", "proxy"]
                .iter()
                .any(|role| name.starts_with(role))
            {
                continue;
            }
            let text = fs::read_to_string(&p).unwrap_or_default();
            found.extend(
                text.lines()
                    .filter(|l| l.contains(" ERROR ") && !l.contains(" ERROR postgres: "))
                    .filter(|l| !self.allowed_errors.iter().any(|a| l.contains(a.as_str())))
                    .map(|l| format!("{name}: {l}")),
            );
        }
        found
    }

    /// Lets ERROR lines containing `text` through from now on (see
    /// [`ClusterBuilder::allow_errors`]).
    pub(crate) fn allow_error(&mut self, text: &str) {
        self.allowed_errors.push(text.to_string());
    }

    pub(crate) fn dump_logs(&self) {
        let Ok(rd) = fs::read_dir(self.base.join("logs")) else {
            return;
        };
        let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            let text = fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(120);
            eprintln!(
                "===== {} (last {} lines) =====",
                p.display(),
                lines.len() - from
            );
            for l in &lines[from..] {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            p.kill();
        }
        for mut s in self.sentinels.drain(..) {
            s.kill();
        }
        let uids: Vec<String> = self.keepers.keys().cloned().collect();
        for uid in uids {
            self.kill_keeper(&uid);
        }
        self.etcd.stop();
        let unexpected = if std::thread::panicking() {
            Vec::new()
        } else {
            self.unexpected_errors()
        };
        if std::thread::panicking() || !unexpected.is_empty() {
            self.dump_logs();
            if let Some(d) = self.dir.take() {
                eprintln!("test failed; its files are kept in {}", d.keep().display());
            }
        }
        assert!(
            unexpected.is_empty(),
            "the roles logged ERROR lines the test did not expect (allow them with \
             ClusterBuilder::allow_errors if the test causes them):\n{}",
            unexpected.join("\n")
        );
    }
}

/// A client session; the connection task runs on the cluster's runtime.
pub(crate) struct Session {
    client: tokio_postgres::Client,
    rt: tokio::runtime::Handle,
}

impl Session {
    /// Runs `sql` (simple query protocol); errors, and hangs beyond 10 s, become Err.
    pub(crate) fn query(&self, sql: &str) -> Result<Rows, String> {
        self.query_within(sql, Duration::from_secs(10))
    }

    /// Like [`Session::query`], waiting up to `timeout` (e.g. for a commit that waits for a
    /// synchronous standby).
    pub(crate) fn query_within(&self, sql: &str, timeout: Duration) -> Result<Rows, String> {
        let fut = self.client.simple_query(sql);
        let msgs = self.rt.block_on(async {
            tokio::time::timeout(timeout, fut)
                .await
                .map_err(|_| format!("{sql:?} timed out"))?
                .map_err(|e| format!("{sql:?}: {}", pg_error(&e)))
        })?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }
}

/// tokio-postgres prints only "db error" for server errors; the server's message is what helps.
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}
