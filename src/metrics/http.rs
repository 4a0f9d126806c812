//! The endpoint: `GET /metrics` answers the registry in Prometheus' text format; on a keeper
//! the health paths (`health.rs`: /health, /primary, /replica, /read-only, …) answer from its
//! health board; anything else 404. It runs on the role's runtime (src/daemon.rs binds it
//! before the role starts, so a taken port is a startup error) and stops when told, after the
//! role has returned: a keeper stopping PostgreSQL stays observable,
//! `stolon_keeper_shutdown_seconds` included.

use super::Metrics;
use super::health::{Check, route};
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

const JSON: &str = "application/json";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "--{flag} {addr}: cannot listen: {source} (is another process using it? change --{flag})"
    )]
    Bind {
        /// The flag the address came from (`metrics-listen-address`, `api-listen-address`).
        flag: &'static str,
        addr: String,
        source: std::io::Error,
    },
}

/// What one listener serves: `--metrics-listen-address` both, `--api-listen-address` the
/// health paths only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routes {
    pub metrics: bool,
    pub health: bool,
}

/// Binds `addr` (given with `--<flag>`) as upstream's Go `http.ListenAndServe` reads it:
/// `host:port`, `[v6]:port`, or `:port` for every address (IPv6 and IPv4, or IPv4 only where
/// the host has no IPv6).
pub async fn bind(flag: &'static str, addr: &str) -> Result<TcpListener, MetricsError> {
    let err = |source| MetricsError::Bind {
        flag,
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

/// Serves `routes` of `metrics` on `listener` until `stop` is cancelled; open connections are
/// dropped then.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    routes: Routes,
    stop: CancellationToken,
) {
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
                let answer = respond(&metrics, routes, &req);
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

fn respond(metrics: &Metrics, routes: Routes, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if routes.health
        && let Some(check) = route(path, req.uri().query())
        && let Some(resp) = health(metrics, check, req.method())
    {
        return resp;
    }
    if !routes.metrics || req.method() != Method::GET || path != "/metrics" {
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

/// A health path's answer; `None` where no keeper registered (a sentinel or proxy: 404).
/// HEAD and OPTIONS (HAProxy's default check) get GET's status and headers without the body.
fn health(
    metrics: &Metrics,
    check: Result<Check, super::health::LagError>,
    method: &Method,
) -> Option<Response<Full<Bytes>>> {
    let board = metrics.health();
    if !board.is_enabled() {
        return None;
    }
    if ![Method::GET, Method::HEAD, Method::OPTIONS].contains(method) {
        let mut resp = plain(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
        resp.headers_mut().insert(
            hyper::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        return Some(resp);
    }
    let (status, body) = match check {
        Ok(check) => {
            let (ok, body) = board.answer(check)?;
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, body)
        }
        // Refused rather than ignored: a check that silently dropped its lag bound would send
        // reads to a standby hours behind.
        Err(e) => {
            let mut body = serde_json::to_vec(&serde_json::json!({ "error": e.to_string() }))
                .unwrap_or_default();
            body.push(b'\n');
            (StatusCode::BAD_REQUEST, body)
        }
    };
    Some(json(status, body, method))
}

fn json(status: StatusCode, body: Vec<u8>, method: &Method) -> Response<Full<Bytes>> {
    // hyper sends no body to HEAD by itself; OPTIONS would get one.
    let body = if method == Method::OPTIONS {
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(JSON));
    resp
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp
}
