//! A small simulated cluster around the real `decide`: keepers and proxies publish infos the way
//! the real processes do (a new infoUID every publish, the db generation they converged to),
//! checks run every simulated second (as watch events would trigger them), and every decision
//! is applied as if the clusterdata write succeeded.

use crate::cluster::*;
use crate::sentinel::{Decision, Event, Memory, Observed, decide};
use chrono::{TimeDelta, TimeZone, Utc};
use std::collections::BTreeMap;

pub(super) const CLUSTER_UID: &str = "c0ffee00";

/// What a simulated keeper process and its postgres do.
#[derive(Debug, Clone)]
pub(super) struct SimKeeper {
    /// Publishing infos at all (false: process killed or cut off from the store).
    pub alive: bool,
    pub pg_healthy: bool,
    /// Reports the generation it was asked for on its next publish.
    pub converges: bool,
    pub reported_generation: Generation,
    pub x_log_pos: u64,
    pub timeline: u64,
    pub system_id: String,
    pub can_be_master: Option<bool>,
    pub can_be_sync: Option<bool>,
    /// `--priority` (none: a keeper that does not say).
    pub priority: Option<i64>,
    /// Standbys the master reports in sync; `None` = every alive wanted sync standby.
    pub in_sync: Option<Vec<DbUid>>,
    pub last_publish: Option<Time>,
    /// `can_be_master` as of the last publish: all the sentinel can know of it.
    pub published_can_be_master: Option<bool>,
    pub cluster_uid: String,
}

#[derive(Debug, Clone)]
pub(super) struct SimProxy {
    pub alive: bool,
    /// Acknowledges new proxy generations (false: hung proxy still publishing an old one).
    pub follows: bool,
    pub generation: Generation,
}

pub(super) struct World {
    pub cd: ClusterData,
    pub memory: Memory,
    pub now: Time,
    pub keepers: BTreeMap<String, SimKeeper>,
    pub proxies: BTreeMap<String, SimProxy>,
    pub events: Vec<(Time, Event)>,
    pub last: Option<Decision>,
    pub writes: usize,
    /// What the store holds: the last info each process published.
    pub observed: Option<Observed>,
    /// etcd's NOSPACE alarm is raised: no keeper or proxy publish reaches the store and every
    /// clusterdata write is refused (counted in `refused_writes`).
    pub store_full: bool,
    pub refused_writes: usize,
    /// What the sentinel loop knows: the store refused its writes, until a write got through
    /// again. Set at the first refused clusterdata write or sentinel info publication (every
    /// sleepInterval), as in the loop.
    full_known: bool,
    full_since: Option<Time>,
    /// When the sentinel learns of the full store without a refused clusterdata write: at its
    /// next info publication, sleepInterval by default.
    pub full_noticed_after: TimeDelta,
    publish_every: TimeDelta,
    /// When the sentinel last read the store (a check).
    last_check_at: Option<Time>,
    counter: u64,
    /// Db uids handed to `decide`: a seed and a counter, so a run replays exactly from its
    /// inputs; the seed varies them, and with them the initial master.
    uid_seed: u64,
    db_counter: u64,
}

pub(super) fn t0() -> Time {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

pub(super) fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s)
}

impl World {
    /// A fresh cluster in phase initializing with the given spec (JSON, merged over
    /// `{"initMode":"new"}`), leader since `t0`.
    pub(super) fn new(spec_json: &str) -> World {
        let mut base = serde_json::json!({"initMode": "new"});
        let extra: serde_json::Value = serde_json::from_str(spec_json).unwrap();
        json_patch::merge(&mut base, &extra);
        let spec = ClusterSpec::from_json(&base.to_string()).unwrap();
        spec.validate().unwrap();
        let publish_every = crate::sentinel::health::td(spec.sleep_interval());
        World {
            cd: ClusterData::new(CLUSTER_UID.into(), spec, t0()),
            memory: Memory::default(),
            now: t0(),
            keepers: BTreeMap::new(),
            proxies: BTreeMap::new(),
            events: Vec::new(),
            last: None,
            writes: 0,
            observed: None,
            store_full: false,
            refused_writes: 0,
            full_known: false,
            full_since: None,
            full_noticed_after: publish_every,
            publish_every,
            last_check_at: None,
            counter: 0,
            uid_seed: 0,
            db_counter: 0,
        }
    }

    /// Another sequence of db uids (and so, pseudo-randomly, another initial master).
    pub(super) fn with_uid_seed(mut self, seed: u64) -> World {
        self.uid_seed = seed;
        self
    }

    pub(super) fn with_keepers(mut self, uids: &[&str]) -> World {
        for uid in uids {
            self.add_keeper(uid);
        }
        self
    }

    pub(super) fn with_proxies(mut self, uids: &[&str]) -> World {
        for uid in uids {
            self.proxies.insert(
                uid.to_string(),
                SimProxy {
                    alive: true,
                    follows: true,
                    generation: Generation::ZERO,
                },
            );
        }
        self
    }

    pub(super) fn add_keeper(&mut self, uid: &str) {
        self.keepers.insert(
            uid.to_string(),
            SimKeeper {
                alive: true,
                pg_healthy: true,
                converges: true,
                reported_generation: Generation::ZERO,
                x_log_pos: 1000,
                timeline: 1,
                system_id: "7000000000000000001".into(),
                can_be_master: None,
                can_be_sync: None,
                priority: None,
                in_sync: None,
                last_publish: None,
                published_can_be_master: None,
                cluster_uid: CLUSTER_UID.into(),
            },
        );
    }

    /// Runs until the cluster is initialized with every keeper holding a good db and the
    /// master published to the proxies.
    pub(super) fn initialized(mut self) -> World {
        self.run_until(120, |w| {
            w.cd.cluster.status.phase == ClusterPhase::Normal
                && w.cd.proxy.spec.master_db_uid
                    == w.cd.cluster.status.master.clone().unwrap_or_default()
                && w.cd.dbs.values().all(|db| {
                    db.status.current_generation == db.generation
                        && db.status.healthy
                        && db.spec.init_mode == DbInitMode::None
                })
                && w.cd.dbs.len()
                    == w.keepers
                        .len()
                        .min(1 + usize::from(w.cd.cluster.spec.max_standbys_per_sender()))
        });
        self
    }

    pub(super) fn keeper(&mut self, uid: impl AsRef<str>) -> &mut SimKeeper {
        self.keepers.get_mut(uid.as_ref()).unwrap()
    }

    pub(super) fn kill(&mut self, uid: impl AsRef<str>) {
        self.keeper(uid).alive = false;
    }

    /// The keeper's info key expired (TTL) from the store.
    pub(super) fn expire(&mut self, uid: impl AsRef<str>) {
        if let Some(o) = self.observed.as_mut() {
            o.keepers.remove(&KeeperUid::from(uid.as_ref()));
        }
    }

    pub(super) fn db_of(&self, keeper: impl AsRef<str>) -> Option<&Db> {
        self.cd.db_of_keeper(&KeeperUid::from(keeper.as_ref()))
    }

    pub(super) fn db_uid_of(&self, keeper: impl AsRef<str>) -> DbUid {
        self.db_of(keeper)
            .map(|d| d.uid.clone())
            .unwrap_or_default()
    }

    pub(super) fn master_keeper(&self) -> KeeperUid {
        self.cd.master_keeper_uid().cloned().unwrap_or_default()
    }

    pub(super) fn master_db(&self) -> &Db {
        self.cd.master_db().unwrap()
    }

    /// Every alive keeper whose publish period elapsed publishes a new info.
    fn publish_keepers(&mut self, observed: &mut Observed, force: bool) {
        let uids: Vec<String> = self.keepers.keys().cloned().collect();
        for uid in uids {
            let due = {
                let k = &self.keepers[&uid];
                k.alive
                    && (force
                        || k.last_publish
                            .is_none_or(|t| self.now - t >= self.publish_every))
            };
            if due {
                self.counter += 1;
                let info = self.keeper_info(&uid, format!("info{}", self.counter));
                let now = self.now;
                let k = self.keeper(&uid);
                k.last_publish = Some(now);
                k.published_can_be_master = info.can_be_master;
                observed.keepers.insert(KeeperUid::from(uid), info);
            }
        }
    }

    fn keeper_info(&mut self, uid: &str, info_uid: String) -> KeeperInfo {
        let db = self.cd.db_of_keeper(&KeeperUid::from(uid)).cloned();
        let k = self.keepers.get_mut(uid).unwrap();
        let postgres_state = db.map(|db| {
            if k.converges {
                k.reported_generation = db.generation;
            }
            let in_sync = k.in_sync.clone().unwrap_or_else(|| {
                db.spec
                    .synchronous_standbys
                    .iter()
                    .filter(|s| self.cd.dbs.contains_key(*s))
                    .cloned()
                    .collect()
            });
            // A keeper told to stop for a switchover stops cleanly at its position.
            let stopped = db.spec.switchover_stop && k.reported_generation >= db.generation;
            PostgresState {
                uid: db.uid.clone(),
                generation: k.reported_generation,
                listen_address: format!("127.0.0.{}", uid.len()),
                port: "5432".into(),
                healthy: k.pg_healthy && !stopped,
                stopped_x_log_pos: stopped.then_some(k.x_log_pos),
                system_id: k.system_id.clone(),
                timeline_id: k.timeline,
                x_log_pos: k.x_log_pos,
                synchronous_standbys: in_sync,
                ..Default::default()
            }
        });
        KeeperInfo {
            info_uid,
            uid: uid.into(),
            cluster_uid: k.cluster_uid.clone(),
            boot_uuid: format!("boot-{uid}"),
            postgres_state,
            can_be_master: k.can_be_master,
            can_be_synchronous_replica: k.can_be_sync,
            priority: k.priority,
            ..Default::default()
        }
    }

    /// The infos as the store holds them now: the last publish of each keeper still "alive"
    /// in the store (we keep dead ones' last info, as a not-yet-expired TTL key would).
    fn observe(&mut self, prev: &Observed) -> Observed {
        let mut observed = prev.clone();
        if self.store_full {
            // Every publish is refused; keys stay (lease keep-alives still work).
            return observed;
        }
        self.publish_keepers(&mut observed, false);
        let gen_now = self.cd.proxy.generation;
        let proxies: Vec<String> = self.proxies.keys().cloned().collect();
        for uid in proxies {
            let p = self.proxies.get_mut(&uid).unwrap();
            if !p.alive {
                continue;
            }
            if p.follows {
                p.generation = gen_now;
            }
            self.counter += 1;
            observed.proxies.insert(
                uid.clone(),
                ProxyInfo {
                    info_uid: format!("p{}", self.counter),
                    uid: uid.clone(),
                    generation: p.generation,
                    proxy_timeout_ns: 15_000_000_000,
                    read_only: false,
                },
            );
        }
        observed
    }

    /// One check at the current time, after due publishes; applies the decision.
    pub(super) fn check(&mut self) -> &Decision {
        let prev = self.observed.take().unwrap_or_default();
        let mut observed = self.observe(&prev);
        // The loop's rule: full from its first refused write (its info publication every
        // sleepInterval at the latest) through the first check whose write gets through.
        if self.store_full {
            let since = *self.full_since.get_or_insert(self.now);
            if self.now - since >= self.full_noticed_after {
                self.full_known = true;
            }
        } else {
            self.full_since = None;
        }
        observed.store_full = self.full_known;
        if !self.store_full {
            self.full_known = false;
        }
        // The loop's rule: a check after failInterval or more without one was blind.
        let fail = crate::sentinel::health::td(self.cd.cluster.spec.fail_interval());
        observed.blind_for = self
            .last_check_at
            .map(|t| self.now - t)
            .filter(|blind| *blind >= fail);
        self.last_check_at = Some(self.now);
        let (seed, counter) = (self.uid_seed, &mut self.db_counter);
        let mut new_uid = || {
            *counter += 1;
            format!("{seed:x}-{counter:04}")
        };
        let d = decide(&self.cd, &observed, &self.memory, self.now, &mut new_uid);
        self.observed = Some(observed);
        self.apply(d)
    }

    pub(super) fn apply(&mut self, d: Decision) -> &Decision {
        if d.cluster_data.is_some() && self.store_full {
            self.refused_writes += 1;
            self.full_known = true;
        } else if let Some(cd) = &d.cluster_data {
            // Round-trip through JSON as the store would.
            self.cd = ClusterData::from_json(&cd.to_json()).unwrap();
            self.writes += 1;
        }
        self.memory = d.memory.clone();
        for e in &d.events {
            self.events.push((self.now, e.clone()));
        }
        self.last = Some(d);
        self.last.as_ref().unwrap()
    }

    /// The store is down for everyone for `seconds`: nobody publishes, the sentinel reads
    /// nothing (no check).
    pub(super) fn store_down_for(&mut self, seconds: i64) {
        self.now += secs(seconds);
    }

    /// Advances one simulated second and checks.
    pub(super) fn tick(&mut self) -> &Decision {
        self.now += secs(1);
        self.check()
    }

    pub(super) fn run_for(&mut self, seconds: i64) {
        for _ in 0..seconds {
            self.tick();
        }
    }

    /// What `stolonctl switchover` writes: a switchover of the master to `to_keeper`'s db.
    pub(super) fn request_switchover(&mut self, to_keeper: &str, timeout_secs: i64) {
        let from_db = self.master_db().uid.clone();
        let to_db = self.db_uid_of(to_keeper);
        self.cd.cluster.status.switchover = Some(Switchover {
            from_db,
            to_db,
            requested_at: self.now,
            timeout: GoDuration::from_secs(timeout_secs),
            stage: SwitchoverStage::Requested,
            stage_since: self.now,
            stop_x_log_pos: None,
            reason: String::new(),
        });
    }

    pub(super) fn switchover_stage(&self) -> Option<SwitchoverStage> {
        self.cd.cluster.status.switchover.as_ref().map(|s| s.stage)
    }

    /// Ticks until `cond` holds; panics (with the events) after `max` seconds.
    pub(super) fn run_until(&mut self, max: i64, cond: impl Fn(&World) -> bool) -> i64 {
        for i in 0..max {
            if cond(self) {
                return i;
            }
            self.tick();
        }
        if cond(self) {
            return max;
        }
        panic!(
            "condition not reached in {max}s; events:\n{}\ncd: {}",
            self.events_text(),
            self.cd.to_json_pretty()
        );
    }

    pub(super) fn events_text(&self) -> String {
        self.events
            .iter()
            .map(|(t, e)| format!("{} {e:?}", (*t - t0()).num_seconds()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub(super) fn saw(&self, pred: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(|(_, e)| pred(e))
    }

    /// When an event matching `pred` first happened.
    pub(super) fn when(&self, pred: impl Fn(&Event) -> bool) -> Option<Time> {
        self.events.iter().find(|(_, e)| pred(e)).map(|(t, _)| *t)
    }
}
