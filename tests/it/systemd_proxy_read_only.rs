//! Socket activation of the proxy's read-only listener: systemd passes the read-write and the
//! read-only sockets together, told apart by `LISTEN_FDNAMES` (the read-only socket unit's
//! `FileDescriptorName=read-only`); clients of the first reach the master, of the second the
//! standby, and `--read-only-port` is not bound.

use crate::support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use stolon::cluster::{ClusterData, Db, DbRole, FollowConfig, Keeper};
use support::cli::clean_env;
use support::systemd::{DEADLINE, PROXY, Running, STORE_TIMEOUT, ctl};
use support::{Etcd, free_ports, wait_until};

const CLUSTER: &str = "ro";

/// A stand-in PostgreSQL: answers a client's first byte with `name`, then echoes.
fn backend(name: u8) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut first = [0u8; 1];
                if s.read_exact(&mut first).is_ok() && s.write_all(&[name]).is_ok() {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                }
            });
        }
    });
    addr
}

/// Master `m` at `master`, standby `s` following it at `standby`, both healthy and caught up.
fn cluster_data(master: SocketAddr, standby: SocketAddr) -> ClusterData {
    let mut cd: ClusterData = serde_json::from_str(
        r#"{"formatVersion":1,"cluster":{"uid":"c1","generation":1,"spec":{"initMode":"new"},"status":{"master":"m"}},
            "proxy":{"generation":1,"spec":{"masterDbUid":"m"}}}"#,
    )
    .unwrap();
    for (uid, addr) in [("m", master), ("s", standby)] {
        let mut db = Db {
            uid: uid.into(),
            ..Default::default()
        };
        db.spec.keeper_uid = format!("k{uid}").as_str().into();
        db.spec.role = if uid == "m" {
            DbRole::Master
        } else {
            DbRole::Standby
        };
        if uid == "s" {
            db.spec.follow_config = Some(FollowConfig::internal(&"m".into()));
        }
        db.status.healthy = true;
        db.status.listen_address = addr.ip().to_string();
        db.status.port = addr.port().to_string();
        cd.dbs.insert(uid.into(), db);
        let mut keeper = Keeper {
            uid: format!("k{uid}").as_str().into(),
            ..Default::default()
        };
        keeper.status.healthy = true;
        cd.keepers.insert(keeper.uid.clone(), keeper);
    }
    cd
}

/// The backend a client of `port` reaches, if any.
fn greeting(port: u16) -> Option<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .ok()?;
    s.write_all(b"?").ok()?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).ok()?;
    Some(b[0])
}

#[test]
fn the_socket_named_read_only_takes_read_only_clients() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start();
    let mut cd = cluster_data(backend(b'M'), backend(b'S'));
    let write = |cd: &ClusterData| {
        let json = serde_json::to_string(cd).unwrap();
        ctl(&etcd, CLUSTER, &["clusterdata", "write", "-y"], Some(&json));
    };
    write(&cd);
    let [rw, ro, unused] = free_ports(3)[..] else {
        unreachable!()
    };

    let mut cmd = Command::new("/usr/bin/systemd-socket-activate");
    clean_env(&mut cmd);
    cmd.args(["--listen", &format!("127.0.0.1:{rw}")])
        .args(["--listen", &format!("127.0.0.1:{ro}")])
        .arg(format!("--fdname=stolon-proxy@{CLUSTER}.socket:read-only"))
        .arg(&*PROXY)
        .args(etcd.flags(CLUSTER, STORE_TIMEOUT))
        // Both unused: the passed sockets are served instead.
        .args([
            "--listen-address",
            "127.0.0.1",
            "--port",
            &unused.to_string(),
        ])
        .args(["--read-only-port", &unused.to_string()]);
    let mut proxy = Running::spawn(cmd, &dir.path().join("stderr"));

    // The first read-only client starts the proxy; standbys need no enabling, so it is served.
    wait_until(DEADLINE, "a read-only client on the standby", || {
        greeting(ro) == Some(b'S')
    });

    // Play the sentinel: enable the proxy once it announced itself; writers reach the master.
    let prefix = format!("stolon/cluster/{CLUSTER}/proxies/info/");
    let mut keys = Vec::new();
    wait_until(DEADLINE, "the proxy's info in etcd", || {
        keys = etcd.keys(&prefix);
        !keys.is_empty()
    });
    cd.proxy.spec.enabled_proxies = vec![keys[0].trim_start_matches(&prefix).to_string()];
    cd.proxy.generation.bump();
    write(&cd);
    wait_until(DEADLINE, "a read-write client on the master", || {
        greeting(rw) == Some(b'M')
    });
    assert_eq!(greeting(ro), Some(b'S'));
    assert!(
        TcpStream::connect(("127.0.0.1", unused)).is_err(),
        "the proxy bound its own port although systemd passed sockets"
    );
    assert!(proxy.is_running(), "{}", proxy.stderr());
    let info = etcd.get(&keys[0]).unwrap_or_default();
    assert!(info.contains(r#""readOnly":true"#), "{info}");
}
