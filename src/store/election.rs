//! Sentinel leader election on etcd's election service, as upstream's concurrency election:
//! candidates are `P/sentinel-leader/<lease-hex>` = sentinel uid, on the process lease.

use super::etcd::{Store, is_lease_not_found};
use super::{CasOutcome, StoreError};
use crate::cluster::ClusterData;
use etcd_client::{
    Compare, CompareOp, GetOptions, LeaderKey, PutOptions, ResignOptions, SortOrder, SortTarget,
    Txn, TxnOp, TxnOpResponse,
};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const OBSERVE_BACKOFF: Duration = Duration::from_secs(1);
/// How often a waiting candidate looks whether the candidates ahead of it are gone: the
/// leadership handover after a leader's lease expires takes this long at most. Two or three
/// sentinels reading one small range this often cost etcd nothing.
const CAMPAIGN_POLL: Duration = Duration::from_millis(200);

/// The result of standing as a candidate.
enum Candidacy {
    /// Our key exists, created at this revision.
    Made(i64),
    /// etcd no longer knows the lease.
    LeaseGone,
}

/// Who leads an election, as seen by one candidate.
enum FirstCandidate {
    Us,
    Other,
    /// Our candidacy key no longer exists.
    WeAreGone,
}

/// One sentinel's candidacy. Clones share the state.
#[derive(Clone)]
pub struct Election {
    store: Store,
    name: String,
    candidate: String,
    state: Arc<Mutex<ElectionState>>,
}

#[derive(Default)]
struct ElectionState {
    leader: Option<Leadership>,
}

struct Leadership {
    key: LeaderKey,
    /// Ends the observer task when we resign or the election is dropped.
    stop: CancellationToken,
    deposed: bool,
}

impl Drop for ElectionState {
    fn drop(&mut self) {
        if let Some(l) = &self.leader {
            l.stop.cancel();
        }
    }
}

use crate::locks::lock;

impl Store {
    /// A candidacy of sentinel `candidate_uid` (the value of its leader key).
    pub fn election(&self, candidate_uid: &str) -> Election {
        Election {
            store: self.clone(),
            name: self.inner.paths.sentinel_leader(),
            candidate: candidate_uid.to_string(),
            state: Arc::new(Mutex::new(ElectionState::default())),
        }
    }

    /// [`Store::cas_cluster_data`] that also requires `election`'s leader key to still exist, so a
    /// sentinel deposed (lease lost, resigned) between its decision and its write cannot write.
    pub async fn cas_cluster_data_as_leader(
        &self,
        cd: &ClusterData,
        expected_mod_revision: i64,
        election: &Election,
    ) -> Result<CasOutcome, StoreError> {
        let Some((key, rev)) = election.leader_key() else {
            return Ok(CasOutcome::Conflict);
        };
        let (outcome, leader_alive) = self
            .cas_cluster_data_with(cd.to_json(), expected_mod_revision, Some((&key, rev)))
            .await?;
        if leader_alive == Some(false) {
            election.mark_deposed("its leader key is gone");
        }
        Ok(outcome)
    }
}

impl Store {
    /// Creates our candidacy key `key` on `lease` unless it exists (as etcd's Campaign does);
    /// returns its create revision.
    async fn put_candidacy(
        &self,
        key: &str,
        candidate: &str,
        lease: i64,
    ) -> Result<Candidacy, StoreError> {
        let txn = Txn::new()
            .when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(
                key,
                candidate,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else(vec![TxnOp::get(key, None)]);
        // Create-if-absent is idempotent: sent again, it finds the key it made.
        let resp = match self
            .idempotent(&format!("stand as candidate {key}"), || {
                let mut kv = self.inner.client.kv_client();
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await
        {
            Ok(resp) => resp,
            Err(StoreError::Request { source, .. }) if is_lease_not_found(&source) => {
                return Ok(Candidacy::LeaseGone);
            }
            Err(e) => return Err(e),
        };
        if resp.succeeded() {
            let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
            return Ok(Candidacy::Made(rev));
        }
        let existing = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.create_revision()),
            _ => None,
        });
        // The compare and the get are one transaction: a failed compare means the get finds it.
        existing
            .map(Candidacy::Made)
            .ok_or_else(|| StoreError::Unexpected {
                what: format!("stand as candidate {key}"),
                detail: "etcd said the key exists, then returned none".into(),
            })
    }

    /// Whether `our_key` is the oldest candidacy of election `name` (the leader).
    async fn first_candidate(
        &self,
        name: &str,
        our_key: &str,
    ) -> Result<FirstCandidate, StoreError> {
        let prefix = format!("{name}/");
        let resp = self
            .idempotent(&format!("list candidates {prefix}"), || {
                let mut kv = self.inner.client.kv_client();
                let prefix = prefix.clone();
                async move {
                    kv.get(
                        prefix,
                        Some(
                            GetOptions::new()
                                .with_prefix()
                                .with_keys_only()
                                .with_sort(SortTarget::Create, SortOrder::Ascend),
                        ),
                    )
                    .await
                }
            })
            .await?;
        let keys: Vec<&[u8]> = resp.kvs().iter().map(|kv| kv.key()).collect();
        Ok(if keys.first() == Some(&our_key.as_bytes()) {
            FirstCandidate::Us
        } else if keys.contains(&our_key.as_bytes()) {
            FirstCandidate::Other
        } else {
            FirstCandidate::WeAreGone
        })
    }
}

impl Election {
    /// Returns once this candidate is the leader (waits while another sentinel leads).
    /// Errors on store failures; the caller retries.
    ///
    /// etcd's own Campaign request holds one call open until the candidates ahead are gone. When
    /// the member it went to is on a host that crashes or freezes, that call hangs until HTTP/2
    /// keep-alive gives up on the connection (ping interval + timeout, about 15 s), long after
    /// the dead leader's lease expired: the whole of a host-crash failover, measured by
    /// vm-tests. So the candidacy is made the same way (a key `<election>/<lease-hex>` on our
    /// lease, the lowest create revision leads: etcd's Leader and Observe still see it) but
    /// waited on with short reads, each of which goes to a live member (`Store::idempotent`).
    pub async fn campaign(&self) -> Result<(), StoreError> {
        loop {
            let lease = self.store.ensure_lease().await?;
            let mut lease_changed = self.store.inner.lease_gen.subscribe();
            if self.store.lease_id() != Some(lease) {
                continue;
            }
            let key = format!("{}/{lease:x}", self.name);
            let rev = match self
                .store
                .put_candidacy(&key, &self.candidate, lease)
                .await?
            {
                Candidacy::Made(rev) => rev,
                Candidacy::LeaseGone => {
                    self.store.invalidate_lease(lease);
                    continue;
                }
            };
            let mut failing_since = None;
            loop {
                if self.store.lease_id() != Some(lease) {
                    break;
                }
                let first = match self.store.first_candidate(&self.name, &key).await {
                    Ok(first) => {
                        failing_since = None;
                        first
                    }
                    // A read failing for a moment (etcd electing its leader) is retried at
                    // the next poll; one failing for longer is the caller's to report.
                    Err(e) => {
                        let since = *failing_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.store.timeout() {
                            return Err(e);
                        }
                        FirstCandidate::Other
                    }
                };
                match first {
                    FirstCandidate::Us => {
                        self.won(
                            LeaderKey::new()
                                .with_name(self.name.clone())
                                .with_key(key.clone())
                                .with_rev(rev)
                                .with_lease(lease),
                        );
                        return Ok(());
                    }
                    // Our key went with the lease (or was deleted): stand again.
                    FirstCandidate::WeAreGone => break,
                    FirstCandidate::Other => {}
                }
                tokio::select! {
                    _ = tokio::time::sleep(CAMPAIGN_POLL) => {}
                    // The lease was lost while waiting: our candidacy key went with it.
                    _ = lease_changed.changed() => break,
                }
            }
        }
    }

    fn won(&self, key: LeaderKey) {
        let stop = CancellationToken::new();
        tracing::info!(
            sentinel = %self.candidate,
            key = %String::from_utf8_lossy(key.key()),
            "elected sentinel leader"
        );
        let our_key = key.key().to_vec();
        let old = lock(&self.state).leader.replace(Leadership {
            key,
            stop: stop.clone(),
            deposed: false,
        });
        if let Some(old) = old {
            old.stop.cancel();
        }
        tokio::spawn(observe(
            self.store.clone(),
            self.name.clone(),
            self.candidate.clone(),
            our_key,
            Arc::downgrade(&self.state),
            stop,
        ));
    }

    /// Cheap: whether we won and have not since lost the lease, been shown another leader, or
    /// resigned.
    pub fn is_leader(&self) -> bool {
        let st = lock(&self.state);
        let Some(l) = &st.leader else { return false };
        if l.deposed || self.store.lease_id() != Some(l.key.lease()) {
            return false;
        }
        // Step down before etcd can have expired the lease: the first failed keep-alive comes
        // at least ttl/3 after the last good one, so failing for ttl/2 stays inside the TTL.
        match self.store.lease_lost_since() {
            Some(since) => since.elapsed() < self.store.lease_ttl() / 2,
            None => true,
        }
    }

    /// Gives up leadership (deletes our leader key) so another sentinel can take over now.
    pub async fn resign(&self) -> Result<(), StoreError> {
        let Some(l) = lock(&self.state).leader.take() else {
            return Ok(());
        };
        l.stop.cancel();
        let mut ec = self.store.inner.client.election_client();
        self.store
            .call(
                &format!("resign {}", self.name),
                ec.resign(Some(ResignOptions::new().with_leader(l.key.clone()))),
            )
            .await?;
        tracing::info!(sentinel = %self.candidate, "resigned sentinel leadership");
        Ok(())
    }

    /// The uid this election campaigns with.
    pub fn candidate(&self) -> &str {
        &self.candidate
    }

    fn leader_key(&self) -> Option<(Vec<u8>, i64)> {
        let st = lock(&self.state);
        st.leader
            .as_ref()
            .filter(|l| !l.deposed)
            .map(|l| (l.key.key().to_vec(), l.key.rev()))
    }

    fn mark_deposed(&self, why: &str) {
        mark_deposed(&self.state, &self.candidate, why);
    }
}

fn mark_deposed(state: &Mutex<ElectionState>, candidate: &str, why: &str) {
    let mut st = lock(state);
    if let Some(l) = st.leader.as_mut()
        && !l.deposed
    {
        l.deposed = true;
        l.stop.cancel();
        tracing::warn!(sentinel = %candidate, reason = why, "lost sentinel leadership");
    }
}

/// Watches the election while we lead; another leader showing up means we were deposed.
async fn observe(
    store: Store,
    name: String,
    candidate: String,
    our_key: Vec<u8>,
    state: Weak<Mutex<ElectionState>>,
    stop: CancellationToken,
) {
    loop {
        let mut ec = store.inner.client.election_client();
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            r = store.raw(ec.observe(name.clone())) => r,
        };
        if let Ok(Ok(mut stream)) = opened {
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = stream.message() => m,
                };
                match msg {
                    Ok(Some(resp)) => {
                        let Some(kv) = resp.kv() else { continue };
                        if kv.key() != our_key.as_slice() {
                            let Some(state) = state.upgrade() else { return };
                            let other = String::from_utf8_lossy(kv.value());
                            mark_deposed(
                                &state,
                                &candidate,
                                &format!("sentinel {other} holds the leader key"),
                            );
                            return;
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(OBSERVE_BACKOFF) => {}
        }
    }
}
