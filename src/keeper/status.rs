//! PURE: the keeper's one-line systemd STATUS= text and its readiness rule, from what the loop
//! last saw. No clock: durations are passed in.

use super::plan::{Action, PlanEnd, WaitReason};
use crate::cluster::{DbRole, DbUid, KeeperUid};
use std::time::Duration;

/// How the loop's last iteration ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// No iteration finished yet.
    Starting,
    Planned(PlanEnd),
    /// The cluster data could not be read; nothing was changed.
    StoreUnreachable,
    BadClusterData,
    LocalStateUnreadable,
    ActionFailed(&'static str),
}

/// The db the cluster data assigns to this keeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AssignedDb {
    pub uid: DbUid,
    pub role: DbRole,
    pub following: Option<Followed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Followed {
    /// `keeper` is `None` when the followed db is not in the cluster data (any more).
    Keeper {
        keeper: Option<KeeperUid>,
        db: DbUid,
    },
    External,
}

/// What the publisher last learnt from the running PostgreSQL, when it is about the current
/// instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PgHealth {
    pub accepting: bool,
    pub streaming_standbys: usize,
    pub replay_lag: Option<u64>,
}

pub(super) struct StatusFacts<'a> {
    pub outcome: &'a Outcome,
    pub db: Option<&'a AssignedDb>,
    pub running: bool,
    pub health: Option<PgHealth>,
    /// Since the store last answered.
    pub store_silent_for: Duration,
}

pub(super) fn status_line(f: &StatusFacts) -> String {
    let db = f.db.map_or("?", |d| d.uid.as_str());
    let silent = secs(f.store_silent_for);
    match f.outcome {
        Outcome::Starting => "starting".into(),
        Outcome::StoreUnreachable => {
            format!("store unreachable for {silent}; keeping the current state")
        }
        Outcome::BadClusterData => "unusable cluster data; keeping the current state".into(),
        Outcome::LocalStateUnreadable => "cannot read the local state; retrying".into(),
        Outcome::ActionFailed(name) => format!("{name} failed; retrying"),
        Outcome::Planned(PlanEnd::Wait(reason)) => match reason {
            WaitReason::StoreUnreachable if f.running => {
                format!("store unreachable for {silent}; the standby keeps running")
            }
            WaitReason::StoreUnreachable => {
                format!("fenced: store unreachable for {silent}, PostgreSQL stopped")
            }
            WaitReason::NoClusterData => {
                "no cluster data: waiting for the cluster to be initialized".into()
            }
            WaitReason::KeeperNotInClusterData => {
                "waiting for the sentinel to register this keeper".into()
            }
            WaitReason::NoDbAssigned => "no db assigned: waiting for the sentinel".into(),
            WaitReason::BootUuidMismatch => {
                "waiting for the sentinel to see this keeper process".into()
            }
            WaitReason::RoleUndefined => {
                format!("db {db} has no role (a deposed master): PostgreSQL stays stopped")
            }
            WaitReason::FollowedDbAddressUnknown(followed) => {
                format!("db {db}: waiting for the followed db {followed} to publish its address")
            }
            WaitReason::Held(hold) => format!("db {db}: {hold}"),
        },
        Outcome::Planned(PlanEnd::Error(e)) => format!("error: {e}"),
        Outcome::Planned(PlanEnd::Replan) => format!("preparing db {db}"),
        Outcome::Planned(PlanEnd::Converged { db_uid, .. }) => converged(f, db_uid),
    }
}

fn converged(f: &StatusFacts, db_uid: &DbUid) -> String {
    let role = f.db.map_or(DbRole::Undefined, |d| d.role);
    let mut line = match role {
        DbRole::Master => format!("master of db {db_uid}"),
        DbRole::Standby => match f.db.and_then(|d| d.following.as_ref()) {
            Some(Followed::Keeper { keeper, db }) => {
                let keeper = keeper.as_ref().map_or("?", KeeperUid::as_str);
                format!("standby following {keeper} (db {db})")
            }
            Some(Followed::External) => "standby following an external primary".into(),
            None => format!("standby db {db_uid}"),
        },
        DbRole::Undefined => format!("db {db_uid}"),
    };
    if !f.running {
        line.push_str(", PostgreSQL stopped");
        return line;
    }
    let Some(h) = f.health else {
        return line;
    };
    if !h.accepting {
        line.push_str(", PostgreSQL not accepting connections yet");
        return line;
    }
    match role {
        DbRole::Master => match h.streaming_standbys {
            0 => line.push_str(", no standby streaming"),
            1 => line.push_str(", 1 standby streaming"),
            n => line.push_str(&format!(", {n} standbys streaming")),
        },
        DbRole::Standby => match h.replay_lag {
            Some(lag) => line.push_str(&format!(", replay lag {}", bytes(lag))),
            None => line.push_str(", not receiving WAL yet"),
        },
        DbRole::Undefined => {}
    }
    line
}

/// What readiness is decided on.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ReadyFacts {
    /// The keeper info was published at least once.
    pub published: bool,
    /// The cluster data says the cluster is still being initialized.
    pub cluster_initializing: bool,
    pub running: bool,
    /// A publish after PostgreSQL started found it accepting connections.
    pub accepting: bool,
}

/// The systemd readiness rule: the keeper's info is published and, when it has a db, the db
/// converged and its PostgreSQL accepts connections. "No db" counts only once the sentinel has
/// registered the keeper and the cluster is initialized: before that a db may be on its way
/// (the first master's), and READY=1 would come before its PostgreSQL. A keeper the sentinel
/// never gives a db (more keepers than standbys wanted) is ready all the same.
pub(super) fn is_ready(outcome: &Outcome, f: ReadyFacts) -> bool {
    if !f.published {
        return false;
    }
    match outcome {
        // A deposed master's keeper works as meant while it keeps PostgreSQL stopped.
        Outcome::Planned(PlanEnd::Wait(WaitReason::NoDbAssigned | WaitReason::RoleUndefined)) => {
            !f.cluster_initializing
        }
        Outcome::Planned(PlanEnd::Converged { .. }) => f.running && f.accepting,
        _ => false,
    }
}

/// STATUS= while a long action runs; `None` for the quick ones (a status flipping for a few
/// milliseconds every iteration is noise).
pub(super) fn action_status(action: &Action) -> Option<String> {
    Some(
        match action {
            Action::InitDb(_) => "initdb…",
            Action::StartTemporary(_) => "starting PostgreSQL to set up the new db…",
            Action::Resync { rewind: true, .. } => "pg_rewind starting…",
            Action::Resync { .. } => "pg_basebackup starting…",
            Action::Restore { .. } => "restoring the base backup (dataRestoreCommand)…",
            Action::ArchiveRecovery { .. } => "recovering from the WAL archive…",
            Action::Start => "starting PostgreSQL…",
            Action::Restart => "restarting PostgreSQL…",
            Action::Promote => "promoting to master…",
            Action::Stop(_) => "stopping PostgreSQL…",
            Action::WipeFailedInit => "removing the data of a failed init…",
            _ => return None,
        }
        .into(),
    )
}

pub(super) fn basebackup_status(done: u64, total: u64) -> String {
    format!("pg_basebackup {} / {}", bytes(done), bytes(total))
}

pub(super) fn rewind_status(done: u64, total: u64) -> String {
    format!("pg_rewind {} / {}", bytes(done), bytes(total))
}

/// Sizes as PostgreSQL's pg_size_pretty names them (1024-based, `kB`, `MB`, …).
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{s}s")
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Generation;
    use crate::keeper::plan::{PlanError, StopReason};

    fn db(role: DbRole, following: Option<Followed>) -> AssignedDb {
        AssignedDb {
            uid: "3f2a9c1b".into(),
            role,
            following,
        }
    }

    fn converged() -> Outcome {
        Outcome::Planned(PlanEnd::Converged {
            db_uid: "3f2a9c1b".into(),
            generation: Generation::new(2),
        })
    }

    fn line(
        outcome: &Outcome,
        db: Option<&AssignedDb>,
        running: bool,
        h: Option<PgHealth>,
    ) -> String {
        status_line(&StatusFacts {
            outcome,
            db,
            running,
            health: h,
            store_silent_for: Duration::from_millis(6400),
        })
    }

    fn health(streaming: usize, lag: Option<u64>) -> Option<PgHealth> {
        Some(PgHealth {
            accepting: true,
            streaming_standbys: streaming,
            replay_lag: lag,
        })
    }

    #[test]
    fn master_lines() {
        let m = db(DbRole::Master, None);
        let c = converged();
        assert_eq!(
            line(&c, Some(&m), true, health(2, None)),
            "master of db 3f2a9c1b, 2 standbys streaming"
        );
        assert_eq!(
            line(&c, Some(&m), true, health(1, None)),
            "master of db 3f2a9c1b, 1 standby streaming"
        );
        assert_eq!(
            line(&c, Some(&m), true, health(0, None)),
            "master of db 3f2a9c1b, no standby streaming"
        );
        assert_eq!(line(&c, Some(&m), true, None), "master of db 3f2a9c1b");
        assert_eq!(
            line(&c, Some(&m), false, None),
            "master of db 3f2a9c1b, PostgreSQL stopped"
        );
    }

    #[test]
    fn standby_lines() {
        let s = db(
            DbRole::Standby,
            Some(Followed::Keeper {
                keeper: Some("keeper2".into()),
                db: "77aa0011".into(),
            }),
        );
        let c = converged();
        assert_eq!(
            line(&c, Some(&s), true, health(0, Some(0))),
            "standby following keeper2 (db 77aa0011), replay lag 0 B"
        );
        assert_eq!(
            line(
                &c,
                Some(&s),
                true,
                health(0, Some(3 * 1024 * 1024 + 512 * 1024))
            ),
            "standby following keeper2 (db 77aa0011), replay lag 3.5 MB"
        );
        assert_eq!(
            line(&c, Some(&s), true, health(0, None)),
            "standby following keeper2 (db 77aa0011), not receiving WAL yet"
        );
        let not_accepting = Some(PgHealth {
            accepting: false,
            streaming_standbys: 0,
            replay_lag: None,
        });
        assert_eq!(
            line(&c, Some(&s), true, not_accepting),
            "standby following keeper2 (db 77aa0011), PostgreSQL not accepting connections yet"
        );
        let ext = db(DbRole::Standby, Some(Followed::External));
        assert_eq!(
            line(&c, Some(&ext), true, None),
            "standby following an external primary"
        );
    }

    #[test]
    fn waiting_and_failing_lines() {
        let w = |r| Outcome::Planned(PlanEnd::Wait(r));
        assert_eq!(
            line(&w(WaitReason::NoDbAssigned), None, false, None),
            "no db assigned: waiting for the sentinel"
        );
        assert_eq!(
            line(&w(WaitReason::StoreUnreachable), None, false, None),
            "fenced: store unreachable for 6s, PostgreSQL stopped"
        );
        assert_eq!(
            line(&w(WaitReason::StoreUnreachable), None, true, None),
            "store unreachable for 6s; the standby keeps running"
        );
        let m = db(DbRole::Master, None);
        assert_eq!(
            line(
                &w(WaitReason::FollowedDbAddressUnknown("77aa0011".into())),
                Some(&m),
                false,
                None
            ),
            "db 3f2a9c1b: waiting for the followed db 77aa0011 to publish its address"
        );
        assert_eq!(
            line(&Outcome::ActionFailed("start"), None, false, None),
            "start failed; retrying"
        );
        assert_eq!(
            line(
                &Outcome::Planned(PlanEnd::Error(PlanError::MasterToStandby)),
                None,
                false,
                None
            ),
            format!("error: {}", PlanError::MasterToStandby)
        );
        assert_eq!(
            line(&Outcome::StoreUnreachable, None, true, None),
            "store unreachable for 6s; keeping the current state"
        );
    }

    #[test]
    fn readiness() {
        let published = ReadyFacts {
            published: true,
            ..ReadyFacts::default()
        };
        let no_db = Outcome::Planned(PlanEnd::Wait(WaitReason::NoDbAssigned));
        assert!(
            !is_ready(&no_db, ReadyFacts::default()),
            "info not published yet"
        );
        assert!(is_ready(&no_db, published));
        let initializing = ReadyFacts {
            cluster_initializing: true,
            ..published
        };
        assert!(
            !is_ready(&no_db, initializing),
            "the first master's db may be on its way"
        );
        let unregistered = Outcome::Planned(PlanEnd::Wait(WaitReason::KeeperNotInClusterData));
        assert!(!is_ready(&unregistered, published));

        let c = converged();
        let running = ReadyFacts {
            running: true,
            ..published
        };
        assert!(!is_ready(&c, running), "postgres must accept connections");
        let accepting = ReadyFacts {
            accepting: true,
            ..running
        };
        assert!(is_ready(&c, accepting));
        assert!(!is_ready(
            &c,
            ReadyFacts {
                published: false,
                ..accepting
            }
        ));
        assert!(!is_ready(&Outcome::Planned(PlanEnd::Replan), accepting));
        assert!(!is_ready(&Outcome::StoreUnreachable, accepting));
        let fenced = Outcome::Planned(PlanEnd::Wait(WaitReason::StoreUnreachable));
        assert!(!is_ready(&fenced, published));
    }

    #[test]
    fn sizes_and_progress() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 kB");
        assert_eq!(bytes(123 * 1024 * 1024), "123 MB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GB");
        assert_eq!(
            basebackup_status(123 * 1024 * 1024, 456 * 1024 * 1024),
            "pg_basebackup 123 MB / 456 MB"
        );
        assert_eq!(secs(Duration::from_secs(185)), "3m5s");
    }

    #[test]
    fn only_long_actions_change_the_status() {
        assert_eq!(
            action_status(&Action::InitDb(None)).as_deref(),
            Some("initdb…")
        );
        assert!(action_status(&Action::Stop(StopReason::Fencing)).is_some());
        assert!(action_status(&Action::Reload).is_none());
        assert!(action_status(&Action::SetupRoles).is_none());
    }
}
