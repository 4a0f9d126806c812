//! A throwaway CA with a server certificate for etcd (SAN 127.0.0.1) and a client certificate,
//! made with the openssl CLI.

use super::procs::RunAs;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone)]
pub(crate) struct Certs {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl CLI missing (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    /// Writes the files into `dir`; the client key is readable by `client_user` (the keepers).
    pub(crate) fn generate(dir: &Path, client_user: RunAs) -> Certs {
        fs::create_dir_all(dir).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        let days = ["-days", "2"];
        openssl(dir, &["genrsa", "-out", "ca.key", "2048"]);
        openssl(
            dir,
            &[
                &[
                    "req",
                    "-x509",
                    "-new",
                    "-key",
                    "ca.key",
                    "-subj",
                    "/CN=stolon-it-ca",
                ][..],
                &days,
                &["-out", "ca.pem"],
            ]
            .concat(),
        );
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let ext_file = format!("{name}.ext");
            let pem = format!("{name}.pem");
            fs::write(dir.join(&ext_file), ext).unwrap();
            openssl(dir, &["genrsa", "-out", &key, "2048"]);
            openssl(
                dir,
                &[
                    "req",
                    "-new",
                    "-key",
                    &key,
                    "-subj",
                    &format!("/CN=stolon-it-{name}"),
                    "-out",
                    &csr,
                ],
            );
            openssl(
                dir,
                &[
                    &[
                        "x509",
                        "-req",
                        "-in",
                        &csr,
                        "-CA",
                        "ca.pem",
                        "-CAkey",
                        "ca.key",
                        "-CAcreateserial",
                        "-extfile",
                        &ext_file,
                        "-out",
                        &pem,
                    ][..],
                    &days,
                ]
                .concat(),
            );
        }
        for f in ["ca.pem", "server.pem", "client.pem"] {
            fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o644)).unwrap();
        }
        for f in ["ca.key", "server.key", "client.key"] {
            fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o600)).unwrap();
        }
        client_user.chown(&dir.join("client.key"));
        Certs {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}
