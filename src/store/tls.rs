//! Endpoint validation and the TLS settings of `--store-cert-file/--store-key/--store-ca-file/
//! --store-skip-tls-verify`.

use super::{StoreConfig, StoreError};
use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslConnector, SslConnectorBuilder, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
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
    normalize_endpoints(&cfg.endpoints).map_err(StoreError::Config)
}

/// The one endpoint check (configuration loading calls it too, so a bad flag is reported
/// before anything connects): http or https, or no scheme (= http), all with the same scheme.
pub(crate) fn normalize_endpoints(endpoints: &[String]) -> Result<(Vec<String>, Scheme), String> {
    let mut out = Vec::new();
    let mut scheme = None;
    for e in endpoints {
        let e = e.trim();
        let (s, url) = match e.split_once("://") {
            None => (Scheme::Http, format!("http://{e}")),
            Some((s, rest)) if s.eq_ignore_ascii_case("http") && !rest.is_empty() => {
                (Scheme::Http, e.to_string())
            }
            Some((s, rest)) if s.eq_ignore_ascii_case("https") && !rest.is_empty() => {
                (Scheme::Https, e.to_string())
            }
            Some((s, _)) => {
                return Err(format!(
                    "store endpoint {e}: unsupported scheme {s:?} or no host; use http:// or https://"
                ));
            }
        };
        match scheme {
            None => scheme = Some(s),
            Some(prev) if prev != s => {
                return Err(format!(
                    "store endpoints {} mix http and https; use one scheme for all",
                    endpoints.join(",")
                ));
            }
            Some(_) => {}
        }
        out.push(url);
    }
    Ok((out, scheme.unwrap_or(Scheme::Http)))
}

/// The http:// endpoints that are not on this host: what travels to them (the cluster data, who
/// is master, the keepers' addresses) can be read and forged by anyone on the path.
pub(crate) fn plaintext_remote_endpoints(endpoints: &[String]) -> Vec<String> {
    endpoints
        .iter()
        .filter(|e| {
            let Some(rest) = e.strip_prefix("http://") else {
                return false;
            };
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            let host = match authority.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or_default(),
                None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
            };
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            !loopback
        })
        .cloned()
        .collect()
}

/// The OpenSSL client context for http endpoints: never used for a handshake, but the
/// connector wants one.
pub(super) fn plain_ssl() -> Result<SslConnectorBuilder, StoreError> {
    SslConnector::builder(SslMethod::tls_client()).map_err(openssl_setup)
}

fn openssl_setup(e: ErrorStack) -> StoreError {
    StoreError::Config(format!("cannot set up OpenSSL for the store: {e}"))
}

/// The OpenSSL client context for https endpoints. Every file is read and parsed here so a bad
/// file is reported at startup, naming the flag, rather than as an opaque handshake failure.
pub(super) fn ssl(cfg: &StoreConfig) -> Result<SslConnectorBuilder, StoreError> {
    let client_files = match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
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
    };
    // Without --store-ca-file the connector keeps OpenSSL's default verify paths (the system
    // bundle, or SSL_CERT_FILE/SSL_CERT_DIR), as upstream (Go) falls back to the system roots.
    let roots = match &cfg.ca_file {
        Some(path) => Some(ca_store(path)?),
        None => None,
    };
    let identity = match client_files {
        Some((cert, key)) => Some(identity(cert, key)?),
        None => None,
    };
    // Verifies the chain and the endpoint's host name (hyper-openssl sets it per connection).
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(openssl_setup)?;
    // gRPC needs HTTP/2; over TLS, etcd picks it only when the client offers h2 by ALPN.
    b.set_alpn_protos(b"\x02h2").map_err(openssl_setup)?;
    // Go's crypto/tls client refuses anything older; keep the same floor.
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(openssl_setup)?;
    if let Some(store) = roots {
        // Replaces the default store: with a CA file only that CA is trusted, as upstream.
        b.set_cert_store(store);
    }
    if let Some(id) = identity {
        let unusable = |e: ErrorStack| {
            StoreError::Config(format!("{}: unusable as client certificate: {e}", id.files))
        };
        b.set_certificate(&id.cert).map_err(unusable)?;
        for c in id.chain {
            b.add_extra_chain_cert(c).map_err(unusable)?;
        }
        b.set_private_key(&id.key).map_err(unusable)?;
    }
    if cfg.skip_tls_verify {
        // The handshake then ignores the chain and the host name check (both are part of
        // verification); the client certificate is still sent.
        b.set_verify(SslVerifyMode::NONE);
    }
    Ok(b)
}

/// A trust store holding exactly the certificates of `path`.
fn ca_store(path: &Path) -> Result<X509Store, StoreError> {
    let pem = read(path, "--store-ca-file")?;
    let bad = |e: &dyn std::fmt::Display| {
        StoreError::Config(format!(
            "--store-ca-file {}: not a usable PEM CA certificate: {e}",
            path.display()
        ))
    };
    let certs = X509::stack_from_pem(&pem).map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no certificate in it"));
    }
    let mut store = X509StoreBuilder::new().map_err(|e| bad(&e))?;
    for c in certs {
        store.add_cert(c).map_err(|e| bad(&e))?;
    }
    // Go treats every certificate of the CA file as a trust anchor, an intermediate CA too;
    // OpenSSL only does so with PARTIAL_CHAIN.
    store
        .set_flags(X509VerifyFlags::PARTIAL_CHAIN)
        .map_err(|e| bad(&e))?;
    Ok(store.build())
}

struct ClientIdentity {
    /// The flags and files, for errors.
    files: String,
    cert: X509,
    /// Intermediate certificates following the client certificate in its file.
    chain: Vec<X509>,
    key: PKey<Private>,
}

fn identity(cert_path: &Path, key_path: &Path) -> Result<ClientIdentity, StoreError> {
    let pem = read(cert_path, "--store-cert-file")?;
    let bad_cert = |e: &dyn std::fmt::Display| {
        StoreError::Config(format!(
            "--store-cert-file {}: not a usable PEM certificate: {e}",
            cert_path.display()
        ))
    };
    let mut certs = X509::stack_from_pem(&pem).map_err(|e| bad_cert(&e))?;
    if certs.is_empty() {
        return Err(bad_cert(&"no certificate in it"));
    }
    let cert = certs.remove(0);
    let key_pem = read(key_path, "--store-key")?;
    let key = PKey::private_key_from_pem(&key_pem).map_err(|e| {
        StoreError::Config(format!(
            "--store-key {}: not a usable PEM private key: {e}",
            key_path.display()
        ))
    })?;
    let matches = cert
        .public_key()
        .map(|public| public.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(StoreError::Config(format!(
            "--store-key {} is not the private key of --store-cert-file {}",
            key_path.display(),
            cert_path.display()
        )));
    }
    Ok(ClientIdentity {
        files: format!(
            "--store-cert-file {} with --store-key {}",
            cert_path.display(),
            key_path.display()
        ),
        cert,
        chain: certs,
        key,
    })
}

/// How the store reaches etcd, as far as explaining a failure goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TlsUse {
    Plain,
    Tls { client_cert: bool },
}

impl TlsUse {
    pub(super) fn of(cfg: &StoreConfig, scheme: Scheme) -> TlsUse {
        match scheme {
            Scheme::Http => TlsUse::Plain,
            Scheme::Https => TlsUse::Tls {
                client_cert: cfg.cert_file.is_some(),
            },
        }
    }
}

/// The flag to look at when a request failed on TLS, from OpenSSL's error text.
pub(super) fn hint(error: &str, tls: TlsUse) -> Option<&'static str> {
    let TlsUse::Tls { client_cert } = tls else {
        return None;
    };
    if error.contains("certificate verify failed") {
        return Some(if error.contains("mismatch") {
            // OpenSSL's "Hostname mismatch" / "IP address mismatch".
            "the etcd server certificate does not name the host of the endpoint: check \
             --store-endpoints against its subjectAltName"
        } else {
            "the etcd server certificate is not trusted: check --store-ca-file"
        });
    }
    // etcd --client-cert-auth rejects a missing or foreign client certificate with one of these
    // alerts.
    let client_rejected = [
        "alert bad certificate",
        "alert certificate required",
        "alert unknown ca",
        "alert certificate unknown",
    ]
    .iter()
    .any(|a| error.contains(a));
    if client_rejected {
        return Some(if client_cert {
            "etcd refused the client certificate: check that --store-cert-file is signed by \
             etcd's --trusted-ca-file"
        } else {
            "etcd wants a client certificate: give --store-cert-file and --store-key"
        });
    }
    // With TLS 1.3 the server checks the client certificate after the client's handshake is
    // done, so the rejection can also reach us as a bare close (or a write into the closed
    // connection: broken pipe / reset).
    let closed = ["connection closed", "broken pipe", "connection reset"]
        .iter()
        .any(|c| error.contains(c));
    if !client_cert && closed {
        return Some(
            "if etcd runs with --client-cert-auth it wants a client certificate: give \
             --store-cert-file and --store-key",
        );
    }
    None
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path)
        .map_err(|e| StoreError::Config(format!("cannot read {what} {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_to_another_host_is_told_apart_from_loopback() {
        let eps = |list: &[&str]| list.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        assert!(
            plaintext_remote_endpoints(&eps(&[
                "http://127.0.0.1:2379",
                "http://127.8.0.2:2379",
                "http://localhost:2379",
                "http://[::1]:2379",
                "https://10.0.0.1:2379",
            ]))
            .is_empty()
        );
        assert_eq!(
            plaintext_remote_endpoints(&eps(&[
                "http://10.0.0.1:2379",
                "http://127.0.0.1:2379",
                "http://etcd.example/",
                "http://[fd00::1]:2379",
            ])),
            eps(&[
                "http://10.0.0.1:2379",
                "http://etcd.example/",
                "http://[fd00::1]:2379"
            ])
        );
    }
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
            credentials: None,
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

    fn ssl_err(c: &StoreConfig) -> String {
        match ssl(c) {
            Ok(_) => panic!("accepted {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn cert_needs_key() {
        let mut c = cfg(&["https://h:1"]);
        c.cert_file = Some("/dev/null".into());
        let e = ssl_err(&c);
        assert!(e.contains("--store-cert-file needs --store-key"), "{e}");
        c.cert_file = None;
        c.key_file = Some("/dev/null".into());
        let e = ssl_err(&c);
        assert!(e.contains("--store-key needs --store-cert-file"), "{e}");
    }

    #[test]
    fn unusable_ca_file_names_the_flag() {
        let mut c = cfg(&["https://h:1"]);
        c.ca_file = Some("/nonexistent/ca.pem".into());
        let e = ssl_err(&c);
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        c.ca_file = Some("/dev/null".into());
        let e = ssl_err(&c);
        assert!(
            e.contains("--store-ca-file /dev/null") && e.contains("no certificate"),
            "{e}"
        );
    }

    #[test]
    fn hints_name_the_flag() {
        let tls = TlsUse::Tls { client_cert: true };
        let untrusted = "get k: error:0A000086:SSL routines:tls_post_process_server_certificate:\
                         certificate verify failed:../ssl/statem/statem_clnt.c:1889:: unable to \
                         get local issuer certificate: transport error";
        assert!(hint(untrusted, tls).unwrap().contains("--store-ca-file"));
        assert_eq!(hint(untrusted, TlsUse::Plain), None);
        let host = "error:0A000086:SSL routines::certificate verify failed: Hostname mismatch";
        assert!(hint(host, tls).unwrap().contains("--store-endpoints"));
        let alert = "transport error: connection error: error:0A000412:SSL routines:\
                     ssl3_read_bytes:sslv3 alert bad certificate:../ssl/record/rec_layer_s3.c:\
                     1602:SSL alert number 42";
        assert!(hint(alert, tls).unwrap().contains("--trusted-ca-file"));
        let no_cert = TlsUse::Tls { client_cert: false };
        assert!(
            hint(alert, no_cert)
                .unwrap()
                .contains("give --store-cert-file and --store-key")
        );
        let closed = "operation was canceled: transport error: connection closed";
        assert!(hint(closed, no_cert).unwrap().contains("--store-cert-file"));
        let pipe = "transport error: connection error: stream closed because of a broken pipe";
        assert!(hint(pipe, no_cert).unwrap().contains("--store-cert-file"));
        assert_eq!(hint(closed, tls), None);
        assert_eq!(hint("etcdserver: request timed out", no_cert), None);
    }
}
