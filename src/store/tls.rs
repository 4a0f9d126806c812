//! Endpoint validation and the TLS settings of `--store-cert-file/--store-key/--store-ca-file/
//! --store-skip-tls-verify`.

use super::{StoreConfig, StoreError};
use etcd_client::{Certificate, Identity, TlsOptions};
use std::path::Path;

/// Where Debian/Ubuntu keep the system CA bundle; used when no `--store-ca-file` is given, as
/// upstream (Go) falls back to the system roots.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    Http,
    Https,
}

/// Normalises the endpoints (schemeless = http) and checks they share one scheme.
pub(super) fn endpoints(cfg: &StoreConfig) -> Result<(Vec<String>, Scheme), StoreError> {
    if cfg.endpoints.is_empty() {
        return Err(StoreError::Config(
            "no store endpoints given; set --store-endpoints".into(),
        ));
    }
    let mut out = Vec::new();
    let mut scheme = None;
    for e in &cfg.endpoints {
        let e = e.trim();
        let (s, url) = match e.split_once("://") {
            None => (Scheme::Http, format!("http://{e}")),
            Some((s, _)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, e.to_string()),
            Some((s, _)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, e.to_string()),
            Some((s, _)) => {
                return Err(StoreError::Config(format!(
                    "store endpoint {e}: unsupported scheme {s:?}; use http:// or https://"
                )));
            }
        };
        match scheme {
            None => scheme = Some(s),
            Some(prev) if prev != s => {
                return Err(StoreError::Config(format!(
                    "store endpoints {} mix http and https; use one scheme for all",
                    cfg.endpoints.join(",")
                )));
            }
            Some(_) => {}
        }
        out.push(url);
    }
    Ok((out, scheme.unwrap_or(Scheme::Http)))
}

/// The TLS client settings for https endpoints.
pub(super) fn tls_options(cfg: &StoreConfig) -> Result<TlsOptions, StoreError> {
    let ca = match &cfg.ca_file {
        Some(path) => read(path, "--store-ca-file")?,
        None => read(Path::new(SYSTEM_CA_BUNDLE), "system CA bundle").map_err(|e| {
            StoreError::Config(format!(
                "{e}; give the CA of the etcd server certificate with --store-ca-file"
            ))
        })?,
    };
    // tonic negotiates HTTP/2 by ALPN; assume it so a server that does not advertise h2
    // (etcd behind some proxies) still works.
    let mut tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(ca))
        .assume_http2(true);
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => {
            let cert = read(cert, "--store-cert-file")?;
            let key = read(key, "--store-key")?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        (Some(_), None) => {
            return Err(StoreError::Config(
                "--store-cert-file needs --store-key (the client certificate's private key)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(StoreError::Config(
                "--store-key needs --store-cert-file (the client certificate)".into(),
            ));
        }
    }
    Ok(tls)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path)
        .map_err(|e| StoreError::Config(format!("cannot read {what} {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreBackend;
    use std::time::Duration;

    fn cfg(endpoints: &[&str]) -> StoreConfig {
        StoreConfig {
            backend: StoreBackend::Etcdv3,
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            timeout: Duration::from_secs(1),
            prefix: "stolon/cluster".into(),
            cluster_name: "a".into(),
            cert_file: None,
            key_file: None,
            ca_file: None,
            skip_tls_verify: false,
        }
    }

    #[test]
    fn schemes() {
        let (eps, s) = endpoints(&cfg(&["127.0.0.1:2379", "http://h:1"])).unwrap();
        assert_eq!(eps, vec!["http://127.0.0.1:2379", "http://h:1"]);
        assert_eq!(s, Scheme::Http);
        let (_, s) = endpoints(&cfg(&["https://h:1"])).unwrap();
        assert_eq!(s, Scheme::Https);
        let e = endpoints(&cfg(&["https://h:1", "h:2"])).unwrap_err();
        assert!(e.to_string().contains("mix http and https"), "{e}");
        let e = endpoints(&cfg(&["unix://x"])).unwrap_err();
        assert!(e.to_string().contains("unsupported scheme"), "{e}");
        assert!(endpoints(&cfg(&[])).is_err());
    }

    #[test]
    fn cert_needs_key() {
        let mut c = cfg(&["https://h:1"]);
        c.ca_file = Some("/dev/null".into());
        c.cert_file = Some("/dev/null".into());
        let e = tls_options(&c).unwrap_err();
        assert!(e.to_string().contains("--store-key"), "{e}");
        c.ca_file = Some("/nonexistent/ca.pem".into());
        let e = tls_options(&c).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
