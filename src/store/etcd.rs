//! The etcd v3 store: clusterdata with compare-and-swap, infos on one process lease, watches.

use super::channel::Transport;
use super::paths::Paths;
use super::tls::{self, Scheme};
use super::{
    CasOutcome, LastContact, RequestFailure, StoreConfig, StoreError, StoreEvent, Versioned,
};
use crate::cluster::{ClusterData, KeeperInfo, KeepersInfo, ProxiesInfo, ProxyInfo, SentinelInfo};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseTimeToLiveOptions,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Upstream's `MinTTL`: etcd leases shorter than this are not worth the keep-alive traffic and
/// make a keeper vanish on a short hiccup.
pub const MIN_TTL: Duration = Duration::from_secs(20);

/// Retry pace of keep-alive while it fails, so a recovered etcd sees us again quickly.
const KEEPALIVE_RETRY: Duration = Duration::from_secs(1);
const KEEPALIVE_PING: Duration = Duration::from_secs(10);
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(100);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(2);
const WATCH_BUFFER: usize = 256;
/// A watch that has been quiet this long is asked for its progress (etcd answers at once with
/// its current revision): a watch on a member that crashed, froze or was cut off otherwise
/// looks exactly like a quiet one until HTTP/2 keep-alive gives up (KEEPALIVE_PING plus the
/// timeout, 10 s and more), and meanwhile every role reacts only at its next sleepInterval.
/// Measured in vm-tests: a keeper whose watch was on the crashed host's member promoted 0.9 s
/// and applied its synchronous standby 1.4 s after the sentinel wrote them.
const WATCH_PROBE_AFTER: Duration = Duration::from_secs(1);

type EtcdResult<T> = Result<T, etcd_client::Error>;

/// A handle on the cluster's keys in etcd. Cheap to clone; clones share the connection and the
/// process lease.
#[derive(Clone)]
pub struct Store {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) client: Client,
    pub(super) paths: Paths,
    pub(super) timeout: Duration,
    /// How the endpoints are reached, to explain TLS failures.
    tls: tls::TlsUse,
    ttl_secs: AtomicU64,
    /// The floor of `ttl_secs` ([`MIN_TTL`] unless a role sets another).
    min_ttl_secs: AtomicU64,
    /// Serialises lease grants so concurrent first puts share one lease.
    grant_lock: tokio::sync::Mutex<()>,
    lease: Mutex<LeaseState>,
    /// Bumped whenever the lease is granted or lost, so a campaign can start over.
    pub(super) lease_gen: tokio::sync::watch::Sender<u64>,
    /// Info keys already warned about as unparsable (warn once, not every listing).
    warned: Mutex<HashSet<String>>,
    /// When a request last succeeded (the `stolon_store_last_success_seconds` metric).
    contact: LastContact,
}

#[derive(Debug, Default)]
struct LeaseState {
    id: Option<i64>,
    ttl: Duration,
    failing_since: Option<Instant>,
}

use crate::locks::lock;

/// Infos keyed by the uid they carry; an info without one (`uid` gives `None`) by the last
/// segment of its key.
fn keyed_by_uid<K: Ord + From<String>, T>(
    list: Vec<(String, T)>,
    uid: impl Fn(&T) -> Option<K>,
) -> BTreeMap<K, T> {
    list.into_iter()
        .map(|(key_uid, info)| (uid(&info).unwrap_or_else(|| K::from(key_uid)), info))
        .collect()
}

impl Store {
    /// Builds the client; does not need etcd to be up (requests retry the connection).
    pub async fn connect(cfg: &StoreConfig) -> Result<Store, StoreError> {
        if cfg.timeout.is_zero() {
            return Err(StoreError::Config(
                "--store-timeout must be greater than 0".into(),
            ));
        }
        let (endpoints, scheme) = tls::endpoints(cfg)?;
        // HTTP/2 pings detect a silently dead etcd on long-lived watch/campaign streams. etcd
        // (--grpc-keepalive-min-time, default 5s) drops clients that ping more often or while
        // no stream is open, hence the 10s interval and no idle pings.
        // `hasleader` on every request (as etcd's Go client's WithRequireLeader): a member cut
        // off from its peers answers "no leader" at once instead of holding the request until
        // it times out, and the transport then prefers another endpoint (channel.rs).
        let opts = ConnectOptions::new()
            .with_require_leader(true)
            .with_connect_timeout(super::channel::connect_timeout(cfg.timeout))
            .with_keep_alive(KEEPALIVE_PING, cfg.timeout.max(Duration::from_secs(1)))
            .with_keep_alive_while_idle(false);
        // etcd's authentication: a token from the user and password, renewed by the client when
        // etcd no longer accepts it (it expires, or etcd restarted).
        let opts = match &cfg.credentials {
            Some(c) => opts
                .with_user(c.user.clone(), c.password.clone())
                .with_auto_token_refresh(true),
            None => opts,
        };
        let ssl = match scheme {
            Scheme::Https => {
                if cfg.skip_tls_verify {
                    tracing::warn!(
                        endpoints = %endpoints.join(","),
                        "--store-skip-tls-verify is set: the etcd server certificate is NOT \
                         verified, anyone in the path can impersonate the store"
                    );
                }
                tls::ssl(cfg)?
            }
            Scheme::Http => {
                let remote = tls::plaintext_remote_endpoints(&endpoints);
                if !remote.is_empty() {
                    tracing::warn!(
                        endpoints = %remote.join(","),
                        "the store is reached over plain http:// across the network: the cluster \
                         data (who is master, where the keepers are) can be read and forged on \
                         the way; use https:// endpoints with --store-ca-file and client \
                         certificates"
                    );
                }
                if cfg.cert_file.is_some() || cfg.ca_file.is_some() || cfg.key_file.is_some() {
                    tracing::warn!(
                        endpoints = %endpoints.join(","),
                        "store TLS files are ignored because the store endpoints are http://"
                    );
                }
                tls::plain_ssl()?
            }
        };
        let transport = Transport::new(ssl, cfg.timeout).map_err(|e| {
            StoreError::Config(format!("cannot set up the store's TLS connector: {e}"))
        })?;
        let connecting = Client::connect_with_balanced_channel(&endpoints, Some(opts), transport);
        let client = tokio::time::timeout(cfg.timeout, connecting)
            .await
            .map_err(|_| StoreError::Timeout(cfg.timeout))?
            .map_err(|e| {
                let kind = classify(&e);
                StoreError::Request {
                    what: format!("connect to {}", endpoints.join(",")),
                    kind,
                    detail: describe(&e),
                    source: e,
                }
            })?;
        let (lease_gen, _) = tokio::sync::watch::channel(0);
        Ok(Store {
            inner: Arc::new(Inner {
                client,
                paths: Paths::new(&cfg.prefix, &cfg.cluster_name),
                timeout: cfg.timeout,
                tls: tls::TlsUse::of(cfg, scheme),
                ttl_secs: AtomicU64::new(MIN_TTL.as_secs()),
                min_ttl_secs: AtomicU64::new(MIN_TTL.as_secs()),
                grant_lock: tokio::sync::Mutex::new(()),
                lease: Mutex::new(LeaseState::default()),
                lease_gen,
                warned: Mutex::new(HashSet::new()),
                contact: LastContact::default(),
            }),
        })
    }

    /// `<prefix>/<cluster-name>`.
    pub fn cluster_path(&self) -> &str {
        self.inner.paths.cluster()
    }

    /// The per-request timeout (`--store-timeout`).
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// When a request to the store last succeeded, as it changes.
    pub fn last_contact(&self) -> LastContact {
        self.inner.contact.clone()
    }

    pub(super) async fn raw<T>(
        &self,
        f: impl Future<Output = EtcdResult<T>>,
    ) -> Result<EtcdResult<T>, StoreError> {
        let answer = tokio::time::timeout(self.inner.timeout, f)
            .await
            .map_err(|_| StoreError::Timeout(self.inner.timeout))?;
        if answer.is_ok() {
            self.inner.contact.touch();
        }
        Ok(answer)
    }

    /// The request error, classified, with a hint at what to fix where we know it (the TLS
    /// flags, NOSPACE, a member without leader).
    pub(super) fn etcd_error(&self, what: &str, e: etcd_client::Error) -> StoreError {
        let kind = classify(&e);
        let text = describe(&e);
        let hint = match kind {
            RequestFailure::NoLeader => {
                Some("this etcd member is cut off from its peers or the etcd cluster lost quorum")
            }
            RequestFailure::NoSpace => Some(
                "etcd's NOSPACE alarm: the store stays read-only until it is compacted, \
                 defragmented and the alarm disarmed with etcdctl alarm disarm",
            ),
            RequestFailure::Unavailable | RequestFailure::Other => tls::hint(&text, self.inner.tls),
        };
        let detail = match hint {
            Some(hint) => format!("{text} ({hint})"),
            None => text,
        };
        StoreError::Request {
            what: what.to_string(),
            kind,
            detail,
            source: e,
        }
    }

    /// An idempotent request (a read, a put of the same value, a lease grant or keep-alive),
    /// sent as [`attempts`] within the store timeout: a crashed, frozen or leaderless member
    /// costs it an attempt, not a failure.
    pub(super) async fn idempotent<T, F, Fut>(
        &self,
        what: &str,
        attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = EtcdResult<T>>,
    {
        match attempts(self.inner.timeout, attempt).await {
            Some(Ok(v)) => {
                self.inner.contact.touch();
                Ok(v)
            }
            Some(Err(e)) => Err(self.etcd_error(what, e)),
            None => Err(StoreError::Timeout(self.inner.timeout)),
        }
    }

    /// A new lease of `secs`. A grant whose answer was lost and is sent again leaves a lease
    /// nothing uses, which expires by itself.
    async fn grant(&self, secs: u64) -> Result<i64, StoreError> {
        let resp = self
            .idempotent("grant lease", || {
                let mut lc = self.inner.client.lease_client();
                async move { lc.grant(secs as i64, None).await }
            })
            .await?;
        Ok(resp.id())
    }

    pub(super) async fn call<T>(
        &self,
        what: &str,
        f: impl Future<Output = EtcdResult<T>>,
    ) -> Result<T, StoreError> {
        self.raw(f).await?.map_err(|e| self.etcd_error(what, e))
    }

    // ---- clusterdata -------------------------------------------------------------------------

    pub async fn get_cluster_data_raw(&self) -> Result<Option<Versioned<Vec<u8>>>, StoreError> {
        let key = self.inner.paths.cluster_data();
        let resp = self
            .idempotent(&format!("get {key}"), || {
                let mut kv = self.inner.client.kv_client();
                let key = key.clone();
                async move { kv.get(key, None).await }
            })
            .await?;
        Ok(resp.kvs().first().map(|kv| Versioned {
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
        }))
    }

    /// The clusterdata, checked (formatVersion, spec) as every component does on read.
    pub async fn get_cluster_data(&self) -> Result<Option<Versioned<ClusterData>>, StoreError> {
        let Some(raw) = self.get_cluster_data_raw().await? else {
            return Ok(None);
        };
        let value = ClusterData::from_json(&raw.value).map_err(|e| StoreError::BadValue {
            key: self.inner.paths.cluster_data(),
            reason: e.to_string(),
        })?;
        Ok(Some(Versioned {
            value,
            mod_revision: raw.mod_revision,
        }))
    }

    /// Writes `cd` only if the key is still at `expected_mod_revision` (0: only if it does not
    /// exist yet).
    pub async fn cas_cluster_data(
        &self,
        cd: &ClusterData,
        expected_mod_revision: i64,
    ) -> Result<CasOutcome, StoreError> {
        self.cas_cluster_data_raw(cd.to_json(), expected_mod_revision)
            .await
    }

    /// [`Store::cas_cluster_data`] with the document's bytes as they are (`clusterdata write`
    /// keeps fields this version does not know).
    pub async fn cas_cluster_data_raw(
        &self,
        value: Vec<u8>,
        expected_mod_revision: i64,
    ) -> Result<CasOutcome, StoreError> {
        let (outcome, _) = self
            .cas_cluster_data_with(value, expected_mod_revision, None)
            .await?;
        Ok(outcome)
    }

    /// The CAS, optionally also requiring `leader_key` to have been created at `leader_rev`.
    /// Returns whether the leader key still exists when the txn failed (None when not asked).
    pub(super) async fn cas_cluster_data_with(
        &self,
        value: Vec<u8>,
        expected_mod_revision: i64,
        leader: Option<(&[u8], i64)>,
    ) -> Result<(CasOutcome, Option<bool>), StoreError> {
        let key = self.inner.paths.cluster_data();
        let mut compares = vec![if expected_mod_revision == 0 {
            Compare::create_revision(key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key.clone(), CompareOp::Equal, expected_mod_revision)
        }];
        let mut or_else = Vec::new();
        if let Some((leader_key, leader_rev)) = leader {
            compares.push(Compare::create_revision(
                leader_key.to_vec(),
                CompareOp::Equal,
                leader_rev,
            ));
            or_else.push(TxnOp::get(leader_key.to_vec(), None));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then(vec![TxnOp::put(key.clone(), value, None)])
            .or_else(or_else);
        // Sent as attempts like the idempotent requests: a compare-and-swap sent again after
        // its first attempt went unanswered either finds the first one never applied (the
        // member was dead) or fails its compare on our own write, which the caller handles as
        // any conflict: it reads again and finds its write there. A single attempt sent to a
        // crashed member blocked the sentinel for the whole store timeout (5 s in vm-tests),
        // and its memory was reset after it.
        let what = format!("write {key}");
        let resp = self
            .idempotent(&what, || {
                let mut kv = self.inner.client.kv_client();
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await
            .map_err(|e| outcome_unknown_on_timeout(e, what))?;
        if resp.succeeded() {
            let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
            return Ok((CasOutcome::Written { mod_revision: rev }, None));
        }
        let leader_alive = leader.map(|(leader_key, leader_rev)| {
            resp.op_responses().iter().any(|op| match op {
                TxnOpResponse::Get(g) => g
                    .kvs()
                    .iter()
                    .any(|kv| kv.key() == leader_key && kv.create_revision() == leader_rev),
                _ => false,
            })
        });
        Ok((CasOutcome::Conflict, leader_alive))
    }

    /// Unconditional write (stolonctl init).
    pub async fn put_cluster_data(&self, cd: &ClusterData) -> Result<(), StoreError> {
        self.put_cluster_data_raw(cd.to_json()).await
    }

    /// Unconditional write of the document's bytes as they are (`clusterdata write -y`).
    pub async fn put_cluster_data_raw(&self, value: Vec<u8>) -> Result<(), StoreError> {
        let key = self.inner.paths.cluster_data();
        let what = format!("put {key}");
        self.idempotent(&what, || {
            let mut kv = self.inner.client.kv_client();
            let (key, value) = (key.clone(), value.clone());
            async move { kv.put(key, value, None).await }
        })
        .await
        .map_err(|e| outcome_unknown_on_timeout(e, what))?;
        Ok(())
    }

    // ---- infos -------------------------------------------------------------------------------

    pub async fn put_keeper_info(&self, info: &KeeperInfo) -> Result<(), StoreError> {
        self.put_info(self.inner.paths.keeper_info(&info.uid), info)
            .await
    }

    pub async fn put_sentinel_info(&self, info: &SentinelInfo) -> Result<(), StoreError> {
        self.put_info(self.inner.paths.sentinel_info(&info.uid), info)
            .await
    }

    pub async fn put_proxy_info(&self, info: &ProxyInfo) -> Result<(), StoreError> {
        self.put_info(self.inner.paths.proxy_info(&info.uid), info)
            .await
    }

    pub async fn get_keepers_info(&self) -> Result<KeepersInfo, StoreError> {
        let dir = self.inner.paths.keepers_info_dir();
        let list: Vec<(String, KeeperInfo)> = self.list(&dir).await?;
        Ok(keyed_by_uid(list, |info| {
            (!info.uid.is_empty()).then(|| info.uid.clone())
        }))
    }

    pub async fn get_sentinels_info(&self) -> Result<Vec<SentinelInfo>, StoreError> {
        let dir = self.inner.paths.sentinels_info_dir();
        let list: Vec<(String, SentinelInfo)> = self.list(&dir).await?;
        Ok(list.into_iter().map(|(_, info)| info).collect())
    }

    pub async fn get_proxies_info(&self) -> Result<ProxiesInfo, StoreError> {
        let dir = self.inner.paths.proxies_info_dir();
        let list: Vec<(String, ProxyInfo)> = self.list(&dir).await?;
        Ok(keyed_by_uid(list, |info| {
            (!info.uid.is_empty()).then(|| info.uid.clone())
        }))
    }

    async fn put_info<T: serde::Serialize>(&self, key: String, info: &T) -> Result<(), StoreError> {
        let value = serde_json::to_vec(info).map_err(|e| StoreError::BadValue {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        // A lease can be gone without keep-alive having noticed yet (etcd restored, outage
        // longer than the TTL): then grant a new one and retry once. A put of the same value is
        // idempotent, so it goes as `attempts` (a keeper's publication renews its fence
        // deadline: one member down, or etcd electing a new leader, must not cost it).
        let mut lease_retry = true;
        loop {
            let lease = self.ensure_lease().await?;
            let result = attempts(self.inner.timeout, || {
                let mut kv = self.inner.client.kv_client();
                let (key, value) = (key.clone(), value.clone());
                async move {
                    kv.put(key, value, Some(PutOptions::new().with_lease(lease)))
                        .await
                }
            })
            .await;
            match result {
                Some(Ok(_)) => {
                    self.inner.contact.touch();
                    return Ok(());
                }
                Some(Err(e)) if lease_retry && is_lease_not_found(&e) => {
                    tracing::warn!(
                        lease = format!("{lease:x}"),
                        "store lease expired; granting a new one"
                    );
                    self.invalidate_lease(lease);
                    lease_retry = false;
                }
                Some(Err(e)) if is_lease_not_found(&e) => {
                    return Err(StoreError::LeaseVanished {
                        key: key.to_string(),
                        detail: describe(&e),
                        source: e,
                    });
                }
                Some(Err(e)) => return Err(self.etcd_error(&format!("put {key}"), e)),
                None => return Err(StoreError::Timeout(self.inner.timeout)),
            }
        }
    }

    /// `(uid from the key, parsed value)` for every parsable key under `dir`.
    async fn list<T: DeserializeOwned>(&self, dir: &str) -> Result<Vec<(String, T)>, StoreError> {
        let resp = self
            .idempotent(&format!("list {dir}"), || {
                let mut kv = self.inner.client.kv_client();
                let dir = dir.to_string();
                async move { kv.get(dir, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let mut out = Vec::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let uid = key.strip_prefix(dir).unwrap_or(&key).to_string();
            match serde_json::from_slice::<T>(kv.value()) {
                Ok(v) => {
                    lock(&self.inner.warned).remove(&key);
                    out.push((uid, v));
                }
                Err(e) => {
                    // One bad writer must not blind the sentinel to every other keeper.
                    if lock(&self.inner.warned).insert(key.clone()) {
                        tracing::warn!(key = %key, error = %e, "skipping unparsable info in the store");
                    }
                }
            }
        }
        Ok(out)
    }

    // ---- lease -------------------------------------------------------------------------------

    /// TTL of this process's lease (floored at [`MIN_TTL`]). Takes effect for the next lease
    /// granted: call it before the first info put. [`Store::change_lease_ttl`] also changes a
    /// lease already granted.
    /// Lowers (or raises) the floor of this process's lease TTL from [`MIN_TTL`]: the sentinel's
    /// lease also holds its leader key, and a crashed leader must give way within a few
    /// seconds, not 20. Call it before the first lease is granted.
    pub fn set_min_lease_ttl(&self, floor: Duration) {
        self.inner
            .min_ttl_secs
            .store(floor.as_secs().max(1), Ordering::Relaxed);
    }

    fn lease_secs(&self, ttl: Duration) -> u64 {
        let floor = Duration::from_secs(self.inner.min_ttl_secs.load(Ordering::Relaxed));
        lease_secs(ttl, floor)
    }

    pub fn set_lease_ttl(&self, ttl: Duration) {
        self.inner
            .ttl_secs
            .store(self.lease_secs(ttl), Ordering::Relaxed);
    }

    /// Makes `ttl` (floored at [`MIN_TTL`]) the TTL of this process's lease from now on, also
    /// when one is already granted with another TTL: etcd cannot change a granted lease's TTL,
    /// so a new lease is granted, this process's keys on the old one are moved onto it (values
    /// untouched, so no key is ever absent and watchers see no delete), and the old lease is
    /// revoked. On an error the old lease stays as it was.
    ///
    /// For a process whose lease holds only its info keys (the proxy, whose info must live as
    /// long as its proxyTimeout says, whatever the spec says now). A sentinel's election key is
    /// not moved: its candidacy is tied to the lease it was made with, and it would end.
    pub async fn change_lease_ttl(&self, ttl: Duration) -> Result<(), StoreError> {
        let secs = self.lease_secs(ttl);
        self.inner.ttl_secs.store(secs, Ordering::Relaxed);
        let current = |store: &Store| {
            let st = lock(&store.inner.lease);
            st.id.filter(|_| st.ttl.as_secs() != secs)
        };
        if current(self).is_none() {
            return Ok(());
        }
        let _grant = self.inner.grant_lock.lock().await;
        let Some(old) = current(self) else {
            return Ok(());
        };
        let mut lc = self.inner.client.lease_client();
        let new = self.grant(secs).await?;
        if let Err(e) = self.move_keys(old, new).await {
            // The new lease holds nothing we still need; unrevoked it expires by itself.
            let _ = self.raw(lc.revoke(new)).await;
            return Err(e);
        }
        let ttl = Duration::from_secs(secs);
        {
            let mut st = lock(&self.inner.lease);
            st.id = Some(new);
            st.ttl = ttl;
            st.failing_since = None;
        }
        self.inner.lease_gen.send_modify(|g| *g += 1);
        tokio::spawn(keep_alive(Arc::downgrade(&self.inner), new, ttl));
        tracing::info!(
            old = format!("{old:x}"),
            lease = format!("{new:x}"),
            ttl = ?ttl,
            "store lease replaced to change its TTL"
        );
        // Only an empty lease is left: failing to revoke it just lets it expire.
        if let Err(e) = self.call("revoke lease", lc.revoke(old)).await {
            tracing::debug!(lease = format!("{old:x}"), error = %e, "cannot revoke the replaced store lease; it expires by its TTL");
        }
        Ok(())
    }

    /// Re-attaches every key of lease `old` but the election's to lease `new`.
    async fn move_keys(&self, old: i64, new: i64) -> Result<(), StoreError> {
        let mut lc = self.inner.client.lease_client();
        let resp = self
            .call(
                "list the keys of the store lease",
                lc.time_to_live(old, Some(LeaseTimeToLiveOptions::new().with_keys())),
            )
            .await?;
        let election = format!("{}/", self.inner.paths.sentinel_leader());
        let mut kv = self.inner.client.kv_client();
        for key in resp.keys() {
            if key.starts_with(election.as_bytes()) {
                continue;
            }
            let name = String::from_utf8_lossy(key).into_owned();
            let put = kv.put(
                key.clone(),
                Vec::new(),
                Some(PutOptions::new().with_lease(new).with_ignore_value()),
            );
            match self.raw(put).await? {
                Ok(_) => {}
                // Deleted since the listing: nothing to move.
                Err(e) if is_key_not_found(&e) => {}
                Err(e) => return Err(self.etcd_error(&format!("move {name} to a new lease"), e)),
            }
        }
        Ok(())
    }

    /// Since when keep-alive of the process lease has been failing (None when healthy, or when
    /// no lease was ever needed). A master keeper fences itself when this gets older than its
    /// TTL: its info (and a sentinel's leadership) may already be gone.
    pub fn lease_lost_since(&self) -> Option<Instant> {
        lock(&self.inner.lease).failing_since
    }

    /// The current process lease, if one is granted.
    pub fn lease_id(&self) -> Option<i64> {
        lock(&self.inner.lease).id
    }

    pub(super) fn lease_ttl(&self) -> Duration {
        let st = lock(&self.inner.lease);
        if st.id.is_some() {
            st.ttl
        } else {
            Duration::from_secs(self.inner.ttl_secs.load(Ordering::Relaxed))
        }
    }

    /// Revokes the process lease so its keys vanish now (clean shutdown) instead of after TTL.
    pub async fn revoke_lease(&self) -> Result<(), StoreError> {
        let Some(id) = self.lease_id() else {
            return Ok(());
        };
        self.invalidate_lease(id);
        let mut lc = self.inner.client.lease_client();
        self.call("revoke lease", lc.revoke(id)).await?;
        lock(&self.inner.lease).failing_since = None;
        Ok(())
    }

    /// The process lease, granted on first use; one per `Store` (and its clones).
    pub(super) async fn ensure_lease(&self) -> Result<i64, StoreError> {
        if let Some(id) = self.lease_id() {
            return Ok(id);
        }
        let _grant = self.inner.grant_lock.lock().await;
        if let Some(id) = self.lease_id() {
            return Ok(id);
        }
        let ttl = Duration::from_secs(self.inner.ttl_secs.load(Ordering::Relaxed));
        let id = self.grant(ttl.as_secs()).await?;
        {
            let mut st = lock(&self.inner.lease);
            st.id = Some(id);
            st.ttl = ttl;
            st.failing_since = None;
        }
        self.inner.lease_gen.send_modify(|g| *g += 1);
        tracing::debug!(lease = format!("{id:x}"), ttl = ?ttl, "granted store lease");
        tokio::spawn(keep_alive(Arc::downgrade(&self.inner), id, ttl));
        Ok(id)
    }

    /// Forgets lease `id` (if still current) so the next put grants a new one.
    pub(super) fn invalidate_lease(&self, id: i64) {
        self.inner.invalidate_lease(id);
    }

    // ---- watch -------------------------------------------------------------------------------

    /// Events for everything under the cluster path. Re-establishes itself after errors and then
    /// sends [`StoreEvent::ClusterData`] so the receiver re-reads what it may have missed.
    /// The background task ends when the receiver is dropped.
    pub async fn watch(&self) -> Result<mpsc::Receiver<StoreEvent>, StoreError> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let first = match self.open_watch().await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "store watch not established yet; retrying");
                None
            }
        };
        tokio::spawn(watch_loop(self.clone(), tx, first));
        Ok(rx)
    }

    /// Opens a prefix watch and waits for etcd to confirm it, so events after this point are
    /// not missed. Sent as [`attempts`]: a watch opened on a dead member is opened again on
    /// another one instead of waiting out the store timeout.
    async fn open_watch(&self) -> Result<WatchStream, StoreError> {
        let dir = self.inner.paths.cluster_dir();
        let what = format!("watch {dir}");
        let (stream, first) = self
            .idempotent(&what, || {
                let mut wc = self.inner.client.watch_client();
                let dir = dir.clone();
                async move {
                    let mut stream = wc
                        .watch(dir, Some(WatchOptions::new().with_prefix()))
                        .await?;
                    let first = stream.message().await?;
                    Ok((stream, first))
                }
            })
            .await?;
        match first {
            Some(resp) if resp.created() && !resp.canceled() => Ok(stream),
            Some(resp) => Err(StoreError::Unexpected {
                detail: format!("not created: {}", resp.cancel_reason()),
                what,
            }),
            None => Err(StoreError::Unexpected {
                what,
                detail: "stream closed".into(),
            }),
        }
    }

    // ---- election ----------------------------------------------------------------------------

    /// The uid of the leader sentinel, if any.
    pub async fn leader(&self) -> Result<Option<String>, StoreError> {
        let name = self.inner.paths.sentinel_leader();
        let mut ec = self.inner.client.election_client();
        match self.raw(ec.leader(name.clone())).await? {
            Ok(resp) => Ok(resp
                .kv()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())),
            Err(e) if is_no_leader(&e) => Ok(None),
            Err(e) => Err(self.etcd_error(&format!("read leader {name}"), e)),
        }
    }
}

impl Inner {
    fn invalidate_lease(&self, id: i64) {
        let mut st = lock(&self.lease);
        if st.id == Some(id) {
            st.id = None;
            st.failing_since.get_or_insert_with(Instant::now);
            drop(st);
            self.lease_gen.send_modify(|g| *g += 1);
        }
    }

    fn keep_alive_failed(&self, id: i64) {
        let mut st = lock(&self.lease);
        if st.id == Some(id) && st.failing_since.is_none() {
            st.failing_since = Some(Instant::now());
        }
    }

    fn keep_alive_ok(&self, id: i64) {
        let mut st = lock(&self.lease);
        if st.id == Some(id) {
            st.failing_since = None;
        }
    }
}

/// Whole seconds, floored at [`MIN_TTL`].
fn lease_secs(ttl: Duration, floor: Duration) -> u64 {
    ttl.max(floor).as_secs_f64().ceil() as u64
}

/// Renews lease `id` every ttl/3 until it is replaced, lost or the store is dropped.
async fn keep_alive(inner: Weak<Inner>, id: i64, ttl: Duration) {
    let healthy_pace = ttl / 3;
    let mut pace = healthy_pace;
    let mut failing = false;
    loop {
        tokio::time::sleep(pace).await;
        let Some(inner) = inner.upgrade() else { return };
        if lock(&inner.lease).id != Some(id) {
            return;
        }
        let result = attempts(inner.timeout, || {
            let mut lc = inner.client.lease_client();
            async move {
                let (mut keeper, mut stream) = lc.keep_alive(id).await?;
                keeper.keep_alive().await?;
                stream.message().await
            }
        })
        .await;
        match result {
            Some(Ok(_)) => {
                if failing {
                    tracing::info!(
                        lease = format!("{id:x}"),
                        "store lease keep-alive recovered"
                    );
                }
                failing = false;
                pace = healthy_pace;
                inner.keep_alive_ok(id);
                inner.contact.touch();
            }
            Some(Err(e)) if is_lease_not_found(&e) => {
                tracing::warn!(
                    lease = format!("{id:x}"),
                    "store lease expired; its keys are gone and will be re-put with a new lease"
                );
                inner.invalidate_lease(id);
                return;
            }
            Some(Err(e)) => {
                if !failing {
                    tracing::warn!(lease = format!("{id:x}"), error = %describe(&e), "store lease keep-alive failing");
                }
                failing = true;
                pace = KEEPALIVE_RETRY.min(healthy_pace);
                inner.keep_alive_failed(id);
            }
            None => {
                if !failing {
                    tracing::warn!(lease = format!("{id:x}"), timeout = ?inner.timeout, "store lease keep-alive timed out");
                }
                failing = true;
                pace = KEEPALIVE_RETRY.min(healthy_pace);
                inner.keep_alive_failed(id);
            }
        }
    }
}

async fn watch_loop(store: Store, tx: mpsc::Sender<StoreEvent>, first: Option<WatchStream>) {
    let mut stream = first;
    let mut backoff = WATCH_BACKOFF_MIN;
    loop {
        let mut s = match stream.take() {
            Some(s) => s,
            None => {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                match store.open_watch().await {
                    Ok(s) => {
                        tracing::info!(path = %store.cluster_path(), "store watch re-established");
                        backoff = WATCH_BACKOFF_MIN;
                        // Whatever changed while we were blind: the receiver re-reads it all.
                        if tx.send(StoreEvent::ClusterData).await.is_err() {
                            return;
                        }
                        s
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "store watch still down");
                        backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
                        continue;
                    }
                }
            }
        };
        // An unanswered progress request within this long means the member is gone: the
        // watch is opened again, and the balancer sends it to a member that answers.
        let answer_within = super::channel::first_attempt(store.inner.timeout);
        let mut heard_at = Instant::now();
        let mut probe_deadline: Option<Instant> = None;
        loop {
            let wake = probe_deadline.unwrap_or(heard_at + WATCH_PROBE_AFTER);
            let msg = tokio::select! {
                _ = tx.closed() => return,
                msg = s.message() => msg,
                _ = tokio::time::sleep_until(wake.into()) => {
                    if probe_deadline.is_some() {
                        tracing::warn!(
                            within = ?answer_within,
                            "store watch silent: its member did not answer a progress request; re-creating"
                        );
                        break;
                    }
                    if let Err(e) = s.request_progress().await {
                        tracing::warn!(error = %describe(&e), "store watch lost; re-creating");
                        break;
                    }
                    probe_deadline = Some(Instant::now() + answer_within);
                    continue;
                }
            };
            heard_at = Instant::now();
            probe_deadline = None;
            match msg {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        tracing::warn!(reason = %resp.cancel_reason(), "store watch cancelled by etcd; re-creating");
                        break;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let key = String::from_utf8_lossy(kv.key());
                        let deleted = ev.event_type() == EventType::Delete;
                        if let Some(event) = store.inner.paths.classify(&key, deleted)
                            && tx.send(event).await.is_err()
                        {
                            return;
                        }
                    }
                }
                Ok(None) => {
                    tracing::warn!("store watch closed by etcd; re-creating");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %describe(&e), "store watch lost; re-creating");
                    break;
                }
            }
        }
    }
}

/// The pause between attempts that failed at once (every member answers "no leader" while
/// etcd elects one), so they do not spin.
const ATTEMPT_PAUSE: Duration = Duration::from_millis(100);

/// Sends an idempotent request again and again, each attempt bounded by
/// `channel::first_attempt(timeout)`, until one is answered (refusals only count after they
/// persisted that long) or `timeout` has passed. None: the last attempt went unanswered.
///
/// An attempt can go unanswered for good, not only on a dead or frozen member: a member that
/// has not noticed yet that its leader died forwards a write to it, and that proposal is lost
/// (etcd itself answers only after its own request timeout, 7 s by default). The next attempt
/// goes to another member (channel.rs passes over the silent one) or, once the members have
/// elected a new leader, is proposed to it: measured in vm-tests, a host crash that took the
/// etcd leader stalled every write of the survivors for the whole request timeout before this.
async fn attempts<T, F, Fut>(timeout: Duration, mut attempt: F) -> Option<EtcdResult<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = EtcdResult<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let per_attempt = super::channel::first_attempt(timeout);
    let mut last = None;
    let mut refused_since = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return last;
        }
        match tokio::time::timeout(per_attempt.min(left), attempt()).await {
            Ok(Err(e)) if endpoint_failure(&e) => {
                // Refusals ("no leader", connection refused) are retried for as long as one
                // attempt may take (an election), then returned: etcd without quorum, or a
                // single endpoint that is down, is an answer worth giving at once.
                let since = *refused_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= per_attempt {
                    return Some(Err(e));
                }
                last = Some(Err(e));
                tokio::time::sleep(ATTEMPT_PAUSE.min(left)).await;
            }
            Ok(answer) => return Some(answer),
            Err(_) => last = None,
        }
    }
}

/// etcd's texts for the errors that share their gRPC code with others (etcd's Go client tells
/// them apart by these same texts).
const ETCD_NO_LEADER: &str = "etcdserver: no leader";
const ETCD_NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

/// What a failed request means, by gRPC status code first.
/// The error says this member cannot serve now, not that the request is wrong: another member
/// may answer it.
fn endpoint_failure(e: &etcd_client::Error) -> bool {
    matches!(
        classify(e),
        RequestFailure::Unavailable | RequestFailure::NoLeader
    )
}

pub(super) fn classify(e: &etcd_client::Error) -> RequestFailure {
    match e {
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            tonic::Code::Unavailable if s.message() == ETCD_NO_LEADER => RequestFailure::NoLeader,
            tonic::Code::Unavailable => RequestFailure::Unavailable,
            tonic::Code::ResourceExhausted if s.message() == ETCD_NO_SPACE => {
                RequestFailure::NoSpace
            }
            _ => RequestFailure::Other,
        },
        etcd_client::Error::TransportError(_) => RequestFailure::Unavailable,
        _ => RequestFailure::Other,
    }
}

/// One line with the underlying cause (etcd-client's own Display hides the source chain, e.g.
/// the TLS verification failure behind "transport error").
pub(super) fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let mut out = s.message().to_string();
            if out.is_empty() {
                out = format!("{:?}", s.code());
            }
            append_sources(&mut out, std::error::Error::source(s));
            out
        }
        etcd_client::Error::TransportError(t) => {
            let mut out = t.to_string();
            append_sources(&mut out, std::error::Error::source(t));
            out
        }
        other => other.to_string(),
    }
}

fn append_sources(out: &mut String, mut cur: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
}

/// etcd's ErrGRPCLeaseNotFound (NotFound, seen with etcdctl), or the client's own keep-alive
/// error for it.
/// A write that timed out may have been applied: say so rather than report a plain failure.
fn outcome_unknown_on_timeout(e: StoreError, what: String) -> StoreError {
    match e {
        StoreError::Timeout(after) => StoreError::OutcomeUnknown { what, after },
        other => other,
    }
}

pub(super) fn is_lease_not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::NotFound
                && s.message() == "etcdserver: requested lease not found"
        }
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("lease not found"),
        _ => false,
    }
}

/// A put that keeps the value (ignore_value) of a key that does not exist.
fn is_key_not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == tonic::Code::InvalidArgument && s.message() == "etcdserver: key not found")
}

/// The election service's "no leader" answer: a plain error on etcd's side, so code Unknown
/// (seen through etcd's gateway: `{"code":2,"message":"election: no leader"}`).
fn is_no_leader(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.code() == tonic::Code::Unknown && s.message() == "election: no leader")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_write_says_its_outcome_is_unknown() {
        let e = outcome_unknown_on_timeout(
            StoreError::Timeout(Duration::from_secs(5)),
            "write stolon/cluster/c/clusterdata".into(),
        )
        .to_string();
        assert!(
            e.contains("write stolon/cluster/c/clusterdata")
                && e.contains("may or may not have been applied"),
            "{e}"
        );
    }

    fn status(code: tonic::Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn failures_are_classified_by_code_then_etcd_text() {
        use tonic::Code;
        let cases = [
            (Code::Unavailable, ETCD_NO_LEADER, RequestFailure::NoLeader),
            (
                Code::Unavailable,
                "etcdserver: request timed out",
                RequestFailure::Unavailable,
            ),
            (
                Code::ResourceExhausted,
                ETCD_NO_SPACE,
                RequestFailure::NoSpace,
            ),
            (
                Code::ResourceExhausted,
                "etcdserver: too many requests",
                RequestFailure::Other,
            ),
            // The text alone does not make it NOSPACE.
            (Code::Unknown, ETCD_NO_SPACE, RequestFailure::Other),
            (
                Code::PermissionDenied,
                "etcdserver: permission denied",
                RequestFailure::Other,
            ),
        ];
        for (code, message, kind) in cases {
            assert_eq!(classify(&status(code, message)), kind, "{code:?} {message}");
        }
    }

    #[tokio::test]
    async fn an_unanswered_attempt_is_sent_again_within_the_timeout() {
        let timeout = Duration::from_millis(400);
        let mut sent = 0;
        let answer = attempts(timeout, || {
            sent += 1;
            let first = sent == 1;
            async move {
                if first {
                    // A proposal forwarded to a dead leader: never answered.
                    std::future::pending::<()>().await;
                }
                Ok::<_, etcd_client::Error>(sent)
            }
        })
        .await;
        assert!(matches!(answer, Some(Ok(2))), "{answer:?}");
    }

    #[tokio::test]
    async fn refusals_are_retried_for_one_attempt_then_returned() {
        let timeout = Duration::from_secs(4);
        let started = tokio::time::Instant::now();
        let mut sent = 0;
        let answer = attempts(timeout, || {
            sent += 1;
            async { Err::<(), _>(status(tonic::Code::Unavailable, ETCD_NO_LEADER)) }
        })
        .await;
        let took = started.elapsed();
        assert!(matches!(answer, Some(Err(ref e)) if classify(e) == RequestFailure::NoLeader));
        assert!(sent > 1, "retried while etcd may be electing");
        assert!(
            took >= super::super::channel::first_attempt(timeout),
            "{took:?}"
        );
        assert!(took < timeout, "returned before the timeout: {took:?}");
    }

    #[tokio::test]
    async fn other_errors_are_returned_at_once_and_silence_is_none() {
        let mut sent = 0;
        let answer = attempts(Duration::from_secs(4), || {
            sent += 1;
            async { Err::<(), _>(status(tonic::Code::FailedPrecondition, "bad request")) }
        })
        .await;
        assert!(matches!(answer, Some(Err(_))));
        assert_eq!(sent, 1);
        let silent = attempts(Duration::from_millis(300), || {
            std::future::pending::<Result<(), etcd_client::Error>>()
        })
        .await;
        assert!(silent.is_none());
    }
}
