//! What a sentinel remembers between checks. Upstream keeps these as timer maps hidden in the
//! sentinel struct and reads the clock inside its decisions; here they are plain data passed
//! into `decide` and returned by it, so every decision can be replayed in a test.
//!
//! ⚠ Upstream only remembers while leading: a new leader starts empty and cannot judge any
//! keeper failed for failInterval. Here followers run the same checks (without writing), so a
//! follower taking over from a leader that died with the master's host already knows since
//! when the master has been silent (src/sentinel/mod.rs: `Sentinel::check`).

use crate::cluster::{DbUid, Generation, KeeperUid, Time};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Memory {
    /// Since when this sentinel has been observing. `None` at the sentinel's start: the next
    /// check records what it sees and sets this to its `now`. No keeper or db can be declared
    /// failed before `failInterval` has passed since then, because nothing this sentinel
    /// remembers is older (upstream's rule, which upstream applies at every leadership change;
    /// after a gap in observation every timer gets a grace instead: see
    /// `health::resume_after_blind_gap`). Moved to each check's time while the store is full,
    /// like the infos' times.
    pub observing_since: Option<Time>,
    /// Keeper infos by keeper uid: the last infoUID and when it was seen changing. Kept while
    /// the keeper is in the clusterdata even after its info key expired: that is the moment
    /// the keeper went silent.
    pub keepers: BTreeMap<KeeperUid, InfoSeen>,
    /// Proxy infos by proxy uid, to tell active proxies from stale keys.
    pub proxies: BTreeMap<String, InfoSeen>,
    /// Per-db health and progress, by db uid.
    pub dbs: BTreeMap<DbUid, DbMemory>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoSeen {
    pub info_uid: String,
    /// When this sentinel saw the infoUID change. The loop runs on every store watch event, so
    /// this is within milliseconds of the publish: health is judged from it directly. While the
    /// store is full (nobody can publish) every check moves it to its own time.
    pub changed_at: Time,
    /// False for infos merely found at the first check after a reset: such a key may be left by
    /// a dead process, so its content is not trusted until it changes once.
    pub changed_while_observed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DbMemory {
    /// Since when fresh infos report this db in error (no postgres state, another db uid, or
    /// postgres unhealthy).
    pub error_since: Option<Time>,
    /// When a fresh keeper info last reported this db healthy. A db never reported healthy
    /// since the memory was reset is not elected master, whatever the stored status says.
    pub reported_healthy_at: Option<Time>,
    /// The xLogPos of the last report, and for how many consecutive reports it did not move
    /// (upstream's dbNotIncreasingXLogPos, counted per keeper publish rather than per check,
    /// since checks now also run on every watch event).
    pub last_x_log_pos: Option<u64>,
    pub x_log_pos_unchanged: u32,
    /// Started when the sentinel asked for a generation the db has not reached yet.
    pub convergence: Option<ConvergenceTimer>,
    /// The standbys the db's keeper last reported in sync (upstream's in-memory
    /// curSynchronousStandbys); empty unless the last report was a healthy one.
    #[serde(default)]
    pub reported_sync_standbys: Vec<DbUid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvergenceTimer {
    pub generation: Generation,
    pub since: Time,
}

impl Memory {
    /// The reference point for keepers never seen since the memory was reset.
    pub(crate) fn observing_since_or(&self, now: Time) -> Time {
        self.observing_since.unwrap_or(now)
    }
}
