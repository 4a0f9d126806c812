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
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;
use tonic::transport::channel::Change;
use tonic::transport::{Endpoint, Uri};
use tower::Service;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::load::Load;
use tower::util::BoxCloneSyncService;

/// How long an endpoint whose request failed (refused, reset, TLS, answered Unavailable such as
/// "no leader", or left unanswered) is passed over while another endpoint is available, after
/// its first failure in a row; doubled for every further one up to [`SHUN_MAX`].
const SHUN: Duration = Duration::from_secs(2);
const SHUN_MAX: Duration = Duration::from_secs(30);

/// A TCP connect to a live etcd takes a round trip; one to a crashed or cut-off host gets no
/// answer at all. Waiting the whole request timeout for it stalls every request that lands
/// there, so connects give up after this (or the request timeout, when shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) fn connect_timeout(request_timeout: Duration) -> Duration {
    request_timeout.min(CONNECT_TIMEOUT)
}

/// An etcd member answers in milliseconds; one that has not answered after this is frozen,
/// cut off or swamped, and the request goes to another one (`attempts` in etcd.rs). Half
/// the request timeout at most, so a second attempt fits in it; a keeper's publication that
/// tried a dead member first must still get through within the slack its fence leaves (one
/// publication interval, 500 ms with sleepInterval 1s / failInterval 2s: src/cluster/fencing.rs).
const FIRST_ATTEMPT_MAX: Duration = Duration::from_millis(500);

pub(super) fn first_attempt(request_timeout: Duration) -> Duration {
    (request_timeout / 2).min(FIRST_ATTEMPT_MAX)
}

/// Methods that wait by design (the election leader's changes) and so are never counted as
/// unanswered. (etcd's Campaign also would, but is not used: src/store/election.rs.)
const BLOCKING_METHODS: [&str; 1] = ["/v3electionpb.Election/Observe"];

/// Builds the balanced channel etcd-client sends its endpoints to.
pub(super) struct Transport {
    connector: HttpsConnector<HttpConnector>,
    /// An endpoint that leaves a request unanswered this long is passed over.
    unanswered_after: Duration,
}

impl Transport {
    /// `ssl` is used for https endpoints; http endpoints go over plain TCP. `request_timeout`
    /// is the store's per-request timeout.
    pub(super) fn new(
        ssl: SslConnectorBuilder,
        request_timeout: Duration,
    ) -> Result<Transport, openssl::error::ErrorStack> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout(request_timeout)));
        Ok(Transport {
            connector: HttpsConnector::with_connector(tcp, ssl)?,
            // Half the request timeout: the store abandons the request at the full timeout
            // (dropping it here), so the mark must come before; and a member that takes half the
            // timeout to answer one request is worth avoiding while others answer. A false mark
            // only steers requests for a few seconds, it never fails one.
            unanswered_after: first_attempt(request_timeout),
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
        let unanswered_after = self.unanswered_after;
        tokio::spawn(async move {
            // Each endpoint's prober stops when it is removed or this task ends (the client
            // was dropped).
            let mut probers = std::collections::HashMap::new();
            while let Some(change) = endpoints_rx.recv().await {
                let change = match change {
                    Change::Insert(uri, endpoint) => {
                        // The endpoint carries etcd-client's keep-alive and timeout settings.
                        let channel = endpoint.connect_with_connector_lazy(connector.clone());
                        let service = FailureAware::new(channel, unanswered_after);
                        let stop = CancellationToken::new();
                        tokio::spawn(probe(service.clone(), stop.clone()));
                        probers.insert(uri.clone(), stop.drop_guard());
                        tower::discover::Change::Insert(uri, service)
                    }
                    Change::Remove(uri) => {
                        probers.remove(&uri);
                        tower::discover::Change::Remove(uri)
                    }
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

/// Every endpoint is sent a request this often (one that etcd answers at once: an unknown
/// method, so no handler runs and nothing is logged), through the same failure accounting as
/// real requests. Without it, the first real request that drew a member after it crashed or
/// froze waited [`FIRST_ATTEMPT_MAX`] before going elsewhere, once per process and member: in
/// vm-tests that was often the new master's keeper reading the sentinel's decision, or a
/// standby's keeper about to follow it. With it, each process knows a dead member within
/// about `PROBE_EVERY + FIRST_ATTEMPT_MAX` of its death, before a failover is decided.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_PATH: &str = "/stolon.Probe/Ping";

async fn probe<S>(mut service: FailureAware<S>, stop: CancellationToken)
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send,
{
    let bound = service.unanswered_after * 2;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
        let Ok(request) = http::Request::builder()
            .method(http::Method::POST)
            .uri(PROBE_PATH)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(tonic::body::Body::empty())
        else {
            return;
        };
        // The outcome is recorded by FailureAware (answered, unanswered after its bound, or
        // failed to connect); the result itself says nothing more.
        let _ = tokio::time::timeout(bound, async {
            if std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .is_ok()
            {
                let _ = service.call(request).await;
            }
        })
        .await;
    }
}

/// An endpoint's channel that remembers its failures. The balancer (power of two choices)
/// compares two endpoints' loads, so while one recently failed the other one gets the request:
/// with one etcd member down, cut off from its peers (it answers "no leader") or frozen (its
/// socket open, no answers), requests go to the live ones instead of a share of them failing
/// (tonic's own balancer reports no load at all). An endpoint is only passed over while another
/// one is available: with all of them failing, requests still go out and can find one back.
#[derive(Clone)]
struct FailureAware<S> {
    inner: S,
    health: Arc<Mutex<Health>>,
    unanswered_after: Duration,
}

#[derive(Debug, Default)]
struct Health {
    /// Failures in a row; 0 once a request succeeds.
    failures: u32,
    last_failure: Option<Instant>,
}

impl Health {
    /// How much longer this endpoint is passed over (zero: not at all).
    fn shunned_for(&self) -> Duration {
        let Some(at) = self.last_failure else {
            return Duration::ZERO;
        };
        let doublings = self.failures.saturating_sub(1).min(8);
        (SHUN * 2u32.pow(doublings))
            .min(SHUN_MAX)
            .saturating_sub(at.elapsed())
    }

    /// Whether its last failure in a row is more recent than `horizon`.
    fn failed_within(&self, horizon: Duration) -> bool {
        self.failures > 0 && self.last_failure.is_some_and(|at| at.elapsed() < horizon)
    }

    #[cfg(test)]
    fn shunned(&self) -> bool {
        !self.shunned_for().is_zero()
    }
}

impl<S> FailureAware<S> {
    fn new(inner: S, unanswered_after: Duration) -> Self {
        FailureAware {
            inner,
            health: Arc::new(Mutex::new(Health::default())),
            unanswered_after,
        }
    }
}

use crate::locks::lock;

/// One request's outcome for its endpoint, recorded once: when it completes, when it has gone
/// unanswered for too long, or when it is dropped unfinished after that long (the store's own
/// timeout abandons it).
struct Outcome {
    health: Arc<Mutex<Health>>,
    /// When the request counts as unanswered; None for methods that wait by design.
    unanswered_at: Option<tokio::time::Instant>,
    recorded: bool,
}

impl Outcome {
    fn record(&mut self, ok: bool) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let mut h = lock(&self.health);
        if ok {
            *h = Health::default();
        } else {
            h.failures = h.failures.saturating_add(1);
            h.last_failure = Some(Instant::now());
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        let unanswered = self
            .unanswered_at
            .is_some_and(|at| tokio::time::Instant::now() >= at);
        if !unanswered {
            return;
        }
        if self.recorded {
            // Marked while pending and now abandoned, still unanswered: the shun runs from
            // now, not from the mark, so the next requests do not walk straight back into it.
            let mut h = lock(&self.health);
            if h.failures > 0 {
                h.last_failure = Some(Instant::now());
            }
        } else {
            self.record(false);
        }
    }
}

/// Whether the response is a gRPC error that says this endpoint cannot serve now (etcd's "no
/// leader" and its other Unavailable errors come as a trailers-only response: the status is in
/// the headers). Other errors (NOSPACE, a failed compare) would be the same on every member.
fn unavailable<B>(response: &http::Response<B>) -> bool {
    tonic::Status::from_header_map(response.headers())
        .is_some_and(|s| s.code() == tonic::Code::Unavailable)
}

impl<S, B, RB> Service<http::Request<B>> for FailureAware<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send,
    RB: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let blocking = BLOCKING_METHODS.contains(&req.uri().path());
        let mut outcome = Outcome {
            health: self.health.clone(),
            unanswered_at: (!blocking).then(|| tokio::time::Instant::now() + self.unanswered_after),
            recorded: false,
        };
        let response = self.inner.call(req);
        Box::pin(async move {
            tokio::pin!(response);
            let result = match outcome.unanswered_at {
                Some(at) => {
                    tokio::select! {
                        r = &mut response => r,
                        _ = tokio::time::sleep_until(at) => {
                            // Still waiting: other requests avoid this endpoint from now on.
                            outcome.record(false);
                            response.await
                        }
                    }
                }
                None => response.await,
            };
            outcome.record(result.as_ref().is_ok_and(|r| !unavailable(r)));
            result
        })
    }
}

impl<S> Load for FailureAware<S> {
    /// How long it is still shunned, then whether it failed within [`SHUN_MAX`]: when every
    /// endpoint failed lately (etcd re-electing its leader answers "no leader" everywhere for
    /// a moment), the one that failed least recently and least often is tried first, not a
    /// dead one at random; and once its shun is over, an endpoint that failed is still only
    /// chosen over one that did not fail lately when both of the balancer's picks failed.
    /// Without the second part every request that drew a dead member after its first 2 s
    /// shun went unanswered for an attempt: measured in vm-tests, a keeper about to be
    /// promoted lost 0.5 s that way, and a standby told to follow it then found no slot yet.
    type Metric = (Duration, bool);

    fn load(&self) -> (Duration, bool) {
        let h = lock(&self.health);
        (h.shunned_for(), h.failed_within(SHUN_MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shun_doubles_with_failures_in_a_row_and_ends_on_success() {
        let now = Instant::now();
        let ago = |secs| now.checked_sub(Duration::from_secs(secs));
        let h = |failures, secs| Health {
            failures,
            last_failure: ago(secs),
        };
        assert!(!Health::default().shunned());
        assert!(h(1, 1).shunned());
        assert!(!h(1, 3).shunned());
        assert!(h(2, 3).shunned());
        assert!(!h(2, 5).shunned());
        assert!(h(20, 29).shunned());
        assert!(!h(20, 31).shunned(), "capped at SHUN_MAX");
    }

    #[test]
    fn the_endpoint_shunned_for_least_long_is_the_lighter_load() {
        let now = Instant::now();
        let h = |failures, secs| Health {
            failures,
            last_failure: now.checked_sub(Duration::from_secs(secs)),
        };
        // A dead member failed three times in a row; a live one answered "no leader" once.
        assert!(h(3, 1).shunned_for() > h(1, 1).shunned_for());
        assert_eq!(Health::default().shunned_for(), Duration::ZERO);
    }

    /// Waits (bounded) until the endpoint's health satisfies `cond`.
    async fn health_becomes(health: &Arc<Mutex<Health>>, cond: impl Fn(&Health) -> bool) -> bool {
        let deadline = Instant::now() + PROBE_EVERY * 5;
        while Instant::now() < deadline {
            if cond(&lock(health)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn probes_mark_a_silent_endpoint_and_clear_a_live_one() {
        type Req = http::Request<tonic::body::Body>;
        type Resp = http::Response<tonic::body::Body>;
        // A member that never answers (crashed host, frozen process).
        let silent = tower::service_fn(|_: Req| std::future::pending::<Result<Resp, Infallible>>());
        let silent = FailureAware::new(silent, Duration::from_millis(100));
        let stop = CancellationToken::new();
        tokio::spawn(probe(silent.clone(), stop.clone()));
        assert!(
            health_becomes(&silent.health, |h| h.failures > 0).await,
            "no request was sent, yet the silent endpoint is known to fail"
        );
        // A member that answers: its earlier failures are cleared by the probe alone.
        let live = tower::service_fn(|r: Req| async move {
            assert_eq!(r.uri().path(), PROBE_PATH);
            Ok::<_, Infallible>(Resp::new(tonic::body::Body::empty()))
        });
        let live = FailureAware::new(live, Duration::from_millis(100));
        *lock(&live.health) = Health {
            failures: 3,
            last_failure: Some(Instant::now()),
        };
        tokio::spawn(probe(live.clone(), stop.clone()));
        assert!(health_becomes(&live.health, |h| h.failures == 0).await);
        stop.cancel();
    }

    #[test]
    fn an_endpoint_that_failed_lately_stays_behind_one_that_did_not() {
        let now = Instant::now();
        let load = |h: Health| (h.shunned_for(), h.failed_within(SHUN_MAX));
        let failed = |failures, secs| Health {
            failures,
            last_failure: now.checked_sub(Duration::from_secs(secs)),
        };
        // Its 2 s shun is over, yet a healthy endpoint is still the lighter load...
        assert!(!failed(1, 3).shunned());
        assert!(load(failed(1, 3)) > load(Health::default()));
        // ...until SHUN_MAX has passed without another failure: then it is tried again.
        assert_eq!(load(failed(1, 31)), load(Health::default()));
        // Between two that failed, the one shunned for longer is heavier.
        assert!(load(failed(3, 1)) > load(failed(1, 1)));
    }
}
