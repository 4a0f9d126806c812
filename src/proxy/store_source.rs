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
        // Applies to the next lease the store grants; the process lease is granted on the first
        // publish, after the first clusterdata read, so it gets 2×proxyTimeout from the start.
        self.set_lease_ttl(ttl);
        self.put_proxy_info(info).await
    }

    async fn watch(&self) -> Result<mpsc::Receiver<StoreEvent>, StoreError> {
        Store::watch(self).await
    }
}
