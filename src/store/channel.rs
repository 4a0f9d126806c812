//! The gRPC transport under etcd-client: one lazily (re)connecting tonic channel per endpoint,
//! balanced, over our own TCP connector with TLS by OpenSSL for https endpoints.
//!
//! etcd-client's own OpenSSL transport builds its TCP connector without TCP_NODELAY, and Nagle's
//! algorithm then holds the second write of every request until the server's delayed ACK: each
//! etcd request took ~45 ms instead of ~1 ms. tonic's own connector (used with rustls before the
//! switch to OpenSSL) sets TCP_NODELAY; so does this one, for http and https alike.

use etcd_client::{BalancedChannelBuilder, Channel};
use hyper_openssl::client::legacy::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use openssl::ssl::SslConnectorBuilder;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::channel::Change;
use tonic::transport::{Endpoint, Uri};
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::load::Constant;
use tower::util::BoxCloneSyncService;

/// Builds the balanced channel etcd-client sends its endpoints to.
pub(super) struct Transport {
    connector: HttpsConnector<HttpConnector>,
}

impl Transport {
    /// `ssl` is used for https endpoints; http endpoints go over plain TCP.
    pub(super) fn new(
        ssl: SslConnectorBuilder,
        connect_timeout: Duration,
    ) -> Result<Transport, openssl::error::ErrorStack> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        Ok(Transport {
            connector: HttpsConnector::with_connector(tcp, ssl)?,
        })
    }
}

impl BalancedChannelBuilder for Transport {
    type Error = etcd_client::Error;

    fn balanced_channel(
        self,
        buffer_size: usize,
    ) -> Result<(Channel, mpsc::Sender<Change<Uri, Endpoint>>), etcd_client::Error> {
        let (endpoints_tx, mut endpoints_rx) = mpsc::channel::<Change<Uri, Endpoint>>(16);
        let (services_tx, services_rx) = mpsc::channel(16);
        let connector = self.connector;
        tokio::spawn(async move {
            while let Some(change) = endpoints_rx.recv().await {
                let change = match change {
                    Change::Insert(uri, endpoint) => {
                        // The endpoint carries etcd-client's keep-alive and timeout settings.
                        let channel = endpoint.connect_with_connector_lazy(connector.clone());
                        // No load signal: like tonic's own balancer, pick between endpoints at
                        // random; a dead one fails its requests and the callers retry.
                        tower::discover::Change::Insert(uri, Constant::new(channel, 0usize))
                    }
                    Change::Remove(uri) => tower::discover::Change::Remove(uri),
                };
                if services_tx.send(Ok::<_, Infallible>(change)).await.is_err() {
                    return;
                }
            }
        });
        let balanced = Balance::new(ReceiverStream::new(services_rx));
        // The buffer makes the balancer cloneable and shared by all of the client's handles.
        let shared = Buffer::new(balanced, buffer_size);
        Ok((
            Channel::Custom(BoxCloneSyncService::new(shared)),
            endpoints_tx,
        ))
    }
}
