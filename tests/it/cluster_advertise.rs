//! `--pg-advertise-address/--pg-advertise-port`: a keeper whose PostgreSQL is reached through
//! another address (NAT, a forwarder) publishes that one, and the proxy and the standbys use it.
//! A forwarder on 127.0.0.2 plays the address translation.

use crate::support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::{ClusterBuilder, free_port, wait_until};

/// Forwards every connection to `listen` on to `target`; counts them.
fn forwarder(listen: (&str, u16), target: u16) -> Arc<AtomicUsize> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind(listen).unwrap();
    let count = accepted.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
            }
        }
    });
    accepted
}

#[test]
fn the_advertised_address_is_what_the_proxy_and_the_standbys_use() {
    let mut c = ClusterBuilder::new("advertise")
        .keepers(0)
        .sentinels(1)
        .start();
    let advertised_port = free_port();
    c.add_keeper(
        "keeper0",
        &[
            "--pg-advertise-address",
            "127.0.0.2",
            "--pg-advertise-port",
            &advertised_port.to_string(),
        ],
    );
    let real_port = c.keepers["keeper0"].pg_port;
    let through = forwarder(("127.0.0.2", advertised_port), real_port);
    let master = c.wait_master_serving(Duration::from_secs(150));
    assert_eq!(master, "keeper0");
    let cd = c.clusterdata();
    let db = support::Cluster::keeper_db(&cd, "keeper0").unwrap();
    assert_eq!(cd["dbs"][&db]["status"]["listenAddress"], "127.0.0.2");
    assert_eq!(
        cd["dbs"][&db]["status"]["port"],
        advertised_port.to_string()
    );
    let before = through.load(Ordering::SeqCst);
    c.psql_via_proxy("create table t (v text); insert into t values ('via the forwarder')")
        .unwrap();
    assert!(
        through.load(Ordering::SeqCst) > before,
        "the proxy connects to the advertised address"
    );

    c.add_keeper("keeper1", &[]);
    wait_until(
        Duration::from_secs(150),
        "the standby streaming from the advertised address",
        || {
            c.psql_keeper(
                "keeper1",
                "select sender_host, sender_port::text from pg_stat_wal_receiver where status = 'streaming'",
            )
            .is_ok_and(|r| {
                r.first().is_some_and(|r| {
                    r[0].as_deref() == Some("127.0.0.2")
                        && r[1].as_deref() == Some(advertised_port.to_string().as_str())
                })
            })
        },
    );
    c.wait_keeper_rows(
        "keeper1",
        "select v from t",
        &["via the forwarder"],
        Duration::from_secs(60),
    );
}
