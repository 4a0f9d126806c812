//! etcd full (NOSPACE alarm: reads work, writes are refused, the sentinel's too) for longer
//! than failInterval: the master keeps taking writes, directly and through the proxy (no other
//! master can be elected meanwhile, so fencing it would only take the cluster down), and once
//! the alarm is cleared nobody is failed over.

use crate::support;

use std::time::{Duration, Instant};
use support::{Cluster, ClusterBuilder, stays_true, wait_until};

#[test]
fn master_keeps_serving_while_etcd_is_full_and_stays_master_after() {
    let c = ClusterBuilder::new("full")
        .keepers(2)
        .sentinels(1)
        .etcd_args(&["--quota-backend-bytes=16777216"])
        .start();
    let master = c.wait_master_serving(Duration::from_secs(150));
    c.psql_via_proxy("create table full_t (n int)").unwrap();
    let endpoint = c.etcd.endpoint();

    c.rt_block_on(support::etcd::full::fill(&endpoint));
    let full_since = Instant::now();
    // failInterval is 4 s: three of them with every write acknowledged.
    let mut n = 0;
    stays_true(
        Duration::from_secs(12),
        "writes acknowledged directly and through the proxy while etcd is full",
        || {
            n += 1;
            c.psql_keeper(&master, &format!("insert into full_t values ({n})"))
                .and_then(|_| c.psql_via_proxy(&format!("insert into full_t values (-{n})")))
                .map_err(|e| eprintln!("write {n}: {e}"))
                .is_ok()
        },
    );
    eprintln!(
        "{n} writes each way acknowledged while etcd was full for {:?}",
        full_since.elapsed()
    );

    c.rt_block_on(support::etcd::full::clear(&endpoint));
    stays_true(
        Duration::from_secs(8),
        "no failover after the alarm was cleared",
        || c.master_keeper().as_deref() == Some(master.as_str()),
    );
    wait_until(
        Duration::from_secs(30),
        "a write through the proxy after the alarm",
        || c.psql_via_proxy("insert into full_t values (0)").is_ok(),
    );
    let cd = c.clusterdata();
    assert_eq!(
        Cluster::master_keeper_in(&cd).as_deref(),
        Some(master.as_str())
    );
}
