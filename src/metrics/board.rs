//! The keeper's health board: what its loop and its info publisher last saw, written as they
//! see it and read by the health endpoints (`health.rs` decides the answer). A request only
//! takes a lock for the time of one small decision: never a store or PostgreSQL call.

use super::health::{
    AssignedDb, Check, ClusterView, Follows, KeeperView, Observation, answer, stale_after,
};
use crate::cluster::{ClusterData, DEFAULT_SLEEP_INTERVAL, FollowType, KeeperUid};
use crate::locks::lock;
use nix::time::{ClockId, clock_gettime};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Cheap to clone; clones share the board.
#[derive(Clone, Debug, Default)]
pub struct HealthBoard {
    inner: Arc<Mutex<Board>>,
}

#[derive(Debug, Default)]
struct Board {
    /// `None` until a keeper registers: the other roles have no health endpoints.
    view: Option<KeeperView>,
    /// Bumped at every PostgreSQL start and stop (see [`Instance`]).
    instance: u64,
}

/// Which PostgreSQL instance a look is about: one taken before a restart must not vouch for
/// the instance after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance(u64);

/// Now on CLOCK_BOOTTIME, which also counts time the machine was suspended: a keeper resumed
/// after hours must not vouch for what it saw before.
pub fn boot_now() -> Duration {
    // CLOCK_BOOTTIME exists on every Linux this runs on; the fallback keeps time moving.
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
        .map_or(Duration::ZERO, Duration::from)
}

impl HealthBoard {
    /// The keeper registers: from now on the health paths answer.
    pub(crate) fn enable(&self, cluster: &str) {
        let mut board = lock(&self.inner);
        board.view = Some(KeeperView {
            cluster: cluster.to_string(),
            keeper_uid: String::new(),
            running: false,
            observed: None,
            clusterdata: None,
            published_at: None,
            stale_after: DEFAULT_SLEEP_INTERVAL.to_std().saturating_mul(3),
            look_allowance: Duration::ZERO,
        });
    }

    /// A keeper registered: the health paths exist.
    pub fn is_enabled(&self) -> bool {
        lock(&self.inner).view.is_some()
    }

    fn update(&self, f: impl FnOnce(&mut KeeperView, &mut u64)) {
        let mut board = lock(&self.inner);
        let Board { view, instance } = &mut *board;
        if let Some(view) = view.as_mut() {
            f(view, instance);
        }
    }

    /// Who looks at PostgreSQL, and how long a publication after a look may wait for the
    /// store (`--store-timeout`).
    pub fn publisher(&self, uid: &KeeperUid, store_timeout: Duration) {
        self.update(|v, _| {
            uid.as_str().clone_into(&mut v.keeper_uid);
            v.look_allowance = store_timeout;
        });
    }

    /// The keeper's PostgreSQL process runs or not. A change forgets the last look: it was
    /// about another instance.
    pub fn postgres_running(&self, running: bool) {
        self.update(|v, instance| {
            if v.running != running {
                v.running = running;
                v.observed = None;
                *instance += 1;
            }
        });
    }

    /// The instance a look starting now is about.
    pub fn instance(&self) -> Instance {
        Instance(lock(&self.inner).instance)
    }

    /// A look at PostgreSQL, started when `instance` was current; dropped when PostgreSQL
    /// started or stopped meanwhile.
    pub fn observed(&self, instance: Instance, look: Observation) {
        self.update(|v, current| {
            if *current == instance.0 && v.running {
                v.observed = Some(look);
            }
        });
    }

    /// A keeper info publication sent at `sent_at` ([`boot_now`]) reached the store.
    pub fn published(&self, sent_at: Duration) {
        self.update(|v, _| {
            if v.published_at.is_none_or(|t| t < sent_at) {
                v.published_at = Some(sent_at);
            }
        });
    }

    /// A valid clusterdata was read just now.
    pub fn read_clusterdata(&self, cd: &ClusterData, keeper: &KeeperUid) {
        let spec = &cd.cluster.spec;
        let bound = stale_after(
            spec.sleep_interval().to_std(),
            spec.fence_timing().fence_after,
        );
        let view = ClusterView {
            read_at: boot_now(),
            db: cd.db_of_keeper(keeper).map(|db| AssignedDb {
                uid: db.uid.clone(),
                role: db.spec.role,
                elected: cd.cluster.status.master.as_ref() == Some(&db.uid),
                follows: match &db.spec.follow_config {
                    None => Follows::Nothing,
                    Some(fc) if fc.follow_type == FollowType::External => Follows::External,
                    Some(fc) if cd.dbs.contains_key(&fc.db_uid) => Follows::ClusterDb,
                    Some(_) => Follows::Nothing,
                },
            }),
            master_x_log_pos: cd.master_db().map(|m| m.status.x_log_pos),
        };
        self.update(|v, _| {
            v.clusterdata = Some(view);
            v.stale_after = bound;
        });
    }

    /// 200 or 503 (`true`: 200) and the JSON body of `check` now; `None` when no keeper
    /// registered (the path is then unknown).
    pub fn answer(&self, check: Check) -> Option<(bool, Vec<u8>)> {
        let now = boot_now();
        let board = lock(&self.inner);
        let view = board.view.as_ref()?;
        let a = answer(check, view, now);
        // Serializing a struct of strings, numbers and options cannot fail.
        let mut body = serde_json::to_vec(&a.body).unwrap_or_default();
        body.push(b'\n');
        Some((a.ok, body))
    }

    /// The view as it stands (tests).
    #[cfg(test)]
    pub(super) fn view(&self) -> Option<KeeperView> {
        lock(&self.inner).view.clone()
    }
}
