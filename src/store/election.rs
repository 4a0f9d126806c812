//! Sentinel leader election on etcd's election service, as upstream's concurrency election:
//! candidates are `P/sentinel-leader/<lease-hex>` = sentinel uid, on the process lease.

use super::etcd::{Store, is_lease_not_found};
use super::{CasOutcome, StoreError};
use crate::cluster::ClusterData;
use etcd_client::{LeaderKey, ResignOptions};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const OBSERVE_BACKOFF: Duration = Duration::from_secs(1);

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

fn lock(m: &Mutex<ElectionState>) -> MutexGuard<'_, ElectionState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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
            .cas_cluster_data_with(cd, expected_mod_revision, Some((&key, rev)))
            .await?;
        if leader_alive == Some(false) {
            election.mark_deposed("its leader key is gone");
        }
        Ok(outcome)
    }
}

impl Election {
    /// Returns once this candidate is the leader (blocks while another sentinel leads).
    /// Errors on store failures; the caller retries.
    pub async fn campaign(&self) -> Result<(), StoreError> {
        loop {
            let lease = self.store.ensure_lease().await?;
            let mut lease_changed = self.store.inner.lease_gen.subscribe();
            if self.store.lease_id() != Some(lease) {
                continue;
            }
            let mut ec = self.store.inner.client.election_client();
            let campaign = ec.campaign(self.name.clone(), self.candidate.clone(), lease);
            let result = tokio::select! {
                r = campaign => Some(r),
                // The lease was lost while waiting: our candidacy key went with it.
                _ = lease_changed.changed() => None,
            };
            let resp = match result {
                None => continue,
                Some(Err(e)) if is_lease_not_found(&e) => {
                    self.store.invalidate_lease(lease);
                    continue;
                }
                Some(Err(e)) => {
                    return Err(self
                        .store
                        .etcd_error(&format!("campaign for {}", self.name), e));
                }
                Some(Ok(resp)) => resp,
            };
            let Some(key) = resp.leader().cloned() else {
                return Err(StoreError::Etcd(format!(
                    "campaign for {}: etcd answered without a leader key",
                    self.name
                )));
            };
            if self.store.lease_id() != Some(lease) {
                continue;
            }
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
            return Ok(());
        }
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
