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
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::channel::Change;
use tonic::transport::{Endpoint, Uri};
use tower::Service;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::load::Load;
use tower::util::BoxCloneSyncService;

/// How long an endpoint whose request failed at the transport level (refused, reset, TLS) is
/// passed over while another endpoint is available.
const SHUN: Duration = Duration::from_secs(2);

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
                        tower::discover::Change::Insert(uri, FailureAware::new(channel))
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

/// An endpoint's channel that remembers a transport failure. The balancer (power of two
/// choices) compares two endpoints' loads, so while one recently failed the other one gets the
/// request: with one etcd member down, requests go to the live ones instead of half of them
/// failing (tonic's own balancer reports no load at all).
#[derive(Clone)]
struct FailureAware<S> {
    inner: S,
    failed_at: Arc<Mutex<Option<Instant>>>,
}

impl<S> FailureAware<S> {
    fn new(inner: S) -> Self {
        FailureAware {
            inner,
            failed_at: Arc::new(Mutex::new(None)),
        }
    }
}

fn set(failed_at: &Mutex<Option<Instant>>, value: Option<Instant>) {
    // The plain Option cannot be left inconsistent by a panic elsewhere.
    *failed_at.lock().unwrap_or_else(|p| p.into_inner()) = value;
}

impl<S, Req> Service<Req> for FailureAware<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let response = self.inner.call(req);
        let failed_at = self.failed_at.clone();
        Box::pin(async move {
            let result = response.await;
            set(&failed_at, result.is_err().then(Instant::now));
            result
        })
    }
}

impl<S> Load for FailureAware<S> {
    /// true (heavier) while shunned.
    type Metric = bool;

    fn load(&self) -> bool {
        let failed_at = *self.failed_at.lock().unwrap_or_else(|p| p.into_inner());
        failed_at.is_some_and(|at| at.elapsed() < SHUN)
    }
}
