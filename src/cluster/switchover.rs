//! A planned switchover (no upstream equivalent): `stolonctl switchover` writes a request into
//! `cluster.status.switchover`, the sentinel drives it stage by stage (src/sentinel/switchover.rs)
//! and leaves the outcome there, so `stolonctl` and `status` can report it and a new sentinel
//! leader carries on where the last one stopped.

use super::{DbUid, GoDuration, Time};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Switchover {
    /// The master when it was requested; a switchover of any other master is void.
    #[serde(rename = "fromDBUID")]
    pub from_db: DbUid,
    /// The standby to promote.
    #[serde(rename = "toDBUID")]
    pub to_db: DbUid,
    pub requested_at: Time,
    /// From `requested_at`: past it, a switchover not yet at its promotion is rolled back.
    pub timeout: GoDuration,
    pub stage: SwitchoverStage,
    /// When `stage` began, for its duration.
    pub stage_since: Time,
    /// Where the old master's WAL ends: its shutdown checkpoint, once it stopped. The target
    /// is promoted only once it has received WAL past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_x_log_pos: Option<u64>,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SwitchoverStage {
    /// Written by stolonctl; the sentinel has not acted on it yet.
    Requested,
    /// Proxies close their sessions to the master and hold new clients; the sentinel waits
    /// for every active proxy to confirm.
    Draining,
    /// The old master stops cleanly (a shutdown checkpoint) and reports where its WAL ends.
    Stopping,
    /// The target receives the old master's last WAL.
    CatchingUp,
    /// The target is the master: promoted, then published to the proxies.
    Promoting,
    /// The proxies route to the new master.
    Done,
    /// Back to the old master, which serves again (see `reason`).
    RolledBack,
}

impl SwitchoverStage {
    /// Before the promotion: the old master may still take over again.
    pub fn before_promotion(self) -> bool {
        self < SwitchoverStage::Promoting
    }

    pub fn finished(self) -> bool {
        matches!(self, SwitchoverStage::Done | SwitchoverStage::RolledBack)
    }
}

impl std::fmt::Display for SwitchoverStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SwitchoverStage::Requested => "requested",
            SwitchoverStage::Draining => "draining proxies",
            SwitchoverStage::Stopping => "stopping the old master",
            SwitchoverStage::CatchingUp => "target catching up",
            SwitchoverStage::Promoting => "promoting the target",
            SwitchoverStage::Done => "done",
            SwitchoverStage::RolledBack => "rolled back",
        })
    }
}

impl Switchover {
    /// Past this moment a switchover still before its promotion is rolled back.
    pub fn deadline(&self) -> Time {
        self.requested_at
            + chrono::TimeDelta::from_std(self.timeout.to_std()).unwrap_or(chrono::TimeDelta::MAX)
    }

    pub fn in_progress(&self) -> bool {
        !self.stage.finished()
    }
}
