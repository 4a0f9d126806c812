//! The etcd store as the proxy's cluster source.

use super::ClusterSource;
use crate::cluster::{ClusterData, ProxyInfo};
use crate::store::{Store, StoreError, StoreEvent};
use std::time::Duration;
use tokio::sync::mpsc;

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
