//! What the proxy needs from the store, and the etcd store as that source.

use crate::cluster::{ClusterData, ProxyInfo};
use crate::store::{Store, StoreError, StoreEvent};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the proxy needs from the store. `Store` implements it; tests drive the loop with their
/// own source to make the store fail on demand.
pub trait ClusterSource: Send + Sync + 'static {
    /// `Ok(None)`: no clusterdata key. `Err(StoreError::BadValue)`: unreadable clusterdata.
    fn cluster_data(&self) -> impl Future<Output = Result<Option<ClusterData>, StoreError>> + Send;
    /// Publishes `info` under `proxies/info/<uid>`, expiring after `ttl` without a refresh.
    fn publish(
        &self,
        info: &ProxyInfo,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Change events under the cluster path; the proxy re-checks on `StoreEvent::ClusterData`.
    fn watch(&self) -> impl Future<Output = Result<mpsc::Receiver<StoreEvent>, StoreError>> + Send;
}

impl ClusterSource for Store {
    async fn cluster_data(&self) -> Result<Option<ClusterData>, StoreError> {
        Ok(self.get_cluster_data().await?.map(|v| v.value))
    }

    async fn publish(&self, info: &ProxyInfo, ttl: Duration) -> Result<(), StoreError> {
        // The info must outlive the proxyTimeout it announces (the sentinel waits for the proxies
        // whose info is present, and a cut-off proxy takes proxyTimeout to fail closed), so the
        // lease follows the spec: replaced when proxyTimeout changed. The lease first: if that
        // fails, the publish fails and the proxy keeps its current timer, which the current
        // lease still covers.
        self.change_lease_ttl(ttl).await?;
        self.put_proxy_info(info).await
    }

    async fn watch(&self) -> Result<mpsc::Receiver<StoreEvent>, StoreError> {
        Store::watch(self).await
    }
}
