//! The endpoint: `GET /metrics` answers the registry in Prometheus' text format, anything else
//! 404. It runs on the role's runtime (src/daemon.rs binds it before the role starts, so a
//! taken port is a startup error) and stops when told, after the role has returned: a keeper
//! stopping PostgreSQL stays observable, `stolon_keeper_shutdown_seconds` included.

use super::Metrics;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE as CONTENT_TYPE_HEADER, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Prometheus' text format 0.0.4, what upstream serves.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A client that has not sent its request headers by then is dropped, so idle or half-open
/// connections cannot pile up.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "--metrics-listen-address {addr}: cannot listen: {source} (is another process using it? change --metrics-listen-address)"
    )]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Binds `addr` as upstream's Go `http.ListenAndServe` reads it: `host:port`, `[v6]:port`, or
/// `:port` for every address (IPv6 and IPv4, or IPv4 only where the host has no IPv6).
pub async fn bind(addr: &str) -> Result<TcpListener, MetricsError> {
    let err = |source| MetricsError::Bind {
        addr: addr.to_string(),
        source,
    };
    match addr.strip_prefix(':') {
        Some(port) => match TcpListener::bind(format!("[::]:{port}")).await {
            Ok(l) => Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(err(e)),
            Err(_) => TcpListener::bind(format!("0.0.0.0:{port}"))
                .await
                .map_err(err),
        },
        None => TcpListener::bind(addr).await.map_err(err),
    }
}

/// Serves `metrics` on `listener` until `stop` is cancelled; open connections are dropped
/// then.
pub async fn serve(listener: TcpListener, metrics: Metrics, stop: CancellationToken) {
    let mut warned = false;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                warned = false;
                stream
            }
            Err(e) => {
                // Logged once per run of failures, not ten times a second.
                if !warned {
                    tracing::warn!(error = %e, "metrics endpoint: accepting a connection failed; retrying");
                    warned = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let metrics = metrics.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let answer = respond(&metrics, &req);
                async move { Ok::<_, Infallible>(answer) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                served = conn => if let Err(e) = served {
                    tracing::debug!(error = %e, "metrics endpoint: connection ended with an error");
                },
            }
        });
    }
}

fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "404 page not found\n");
    }
    match metrics.render() {
        Ok(text) => {
            let mut resp = Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut()
                .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(CONTENT_TYPE));
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics endpoint: cannot render the metrics");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot render the metrics\n",
            )
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp
}
