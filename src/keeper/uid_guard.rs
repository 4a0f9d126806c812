//! At start, refuse a keeper uid that another live keeper process holds: two keepers with one
//! uid (a data dir cloned with its `keeperstate`, or the same `--uid` on two hosts) would
//! overwrite each other's `keepers/info/<uid>` and take turns driving one db of the
//! clusterdata with two PostgreSQL instances.
//!
//! No store key is added (the layout stays upstream's). A live keeper republishes its info
//! every sleepInterval with a new infoUID; the info a crashed keeper left behind stays as it
//! was until its lease expires. So: read `keepers/info/<uid>`; if it is there, watch it for
//! two publish periods. It changed → another process owns the uid; it stayed the same or
//! vanished → it was ours from before a restart. [`UidWatch`] is that decision (pure); the
//! loop around it reads the store.

use super::error::KeeperError;
use crate::cluster::{KeeperInfo, KeeperUid};
use crate::store::Store;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// What `keepers/info/<uid>` held at one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seen {
    Absent,
    Info { info_uid: String, boot_uuid: String },
}

impl Seen {
    pub(super) fn of(info: Option<&KeeperInfo>) -> Seen {
        match info {
            None => Seen::Absent,
            Some(i) => Seen::Info {
                info_uid: i.info_uid.clone(),
                boot_uuid: i.boot_uuid.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nobody else publishes under the uid.
    Free,
    /// An info of another process is there and has not changed yet: look again.
    Undecided,
    /// Another process republished the info meanwhile.
    InUse { boot_uuid: String },
}

/// Successive reads of the info key, oldest first.
#[derive(Debug, Default)]
pub(super) struct UidWatch {
    first: Option<String>,
}

impl UidWatch {
    pub(super) fn observe(&mut self, seen: &Seen) -> Verdict {
        match seen {
            // Infos live on a lease that a live keeper keeps renewing: gone means dead.
            Seen::Absent => Verdict::Free,
            Seen::Info {
                info_uid,
                boot_uuid,
            } => match &self.first {
                None => {
                    self.first = Some(info_uid.clone());
                    Verdict::Undecided
                }
                Some(first) if first != info_uid => Verdict::InUse {
                    boot_uuid: boot_uuid.clone(),
                },
                Some(_) => Verdict::Undecided,
            },
        }
    }
}

/// How long an unchanged info must stay unchanged to be a dead process's: two publish
/// periods of its keeper (the spec's sleepInterval) and a margin for a slow store.
pub(super) fn watch_for(sleep_interval: Duration) -> Duration {
    sleep_interval * 2 + Duration::from_secs(1)
}

/// Returns once no other live keeper publishes as `uid`, or the error naming the uid and the
/// fix. A store that cannot be read is not a reason to refuse: the keeper cannot publish then
/// either, and the sentinel ignores what it does not see.
pub(super) async fn ensure_uid_free(
    store: &Store,
    uid: &KeeperUid,
    sleep_interval: Duration,
    data_dir: &Path,
) -> Result<(), KeeperError> {
    let deadline = Instant::now() + watch_for(sleep_interval);
    let every = (sleep_interval / 4).max(Duration::from_millis(200));
    let mut watch = UidWatch::default();
    let mut announced = false;
    loop {
        let seen = match store.get_keepers_info().await {
            Ok(infos) => Seen::of(infos.get(uid)),
            Err(e) => {
                tracing::warn!(keeper = %uid, error = %e, "cannot read keeper infos to check that no other keeper uses this uid; going on");
                return Ok(());
            }
        };
        match watch.observe(&seen) {
            Verdict::Free => return Ok(()),
            Verdict::InUse { boot_uuid } => {
                return Err(KeeperError::UidInUse {
                    uid: uid.clone(),
                    other_boot_uuid: boot_uuid,
                    data_dir: data_dir.to_path_buf(),
                });
            }
            Verdict::Undecided => {
                if !announced {
                    tracing::info!(keeper = %uid, "an info of this keeper uid from another process is in the store; checking that it is not republished (up to {:?})", watch_for(sleep_interval));
                    announced = true;
                }
            }
        }
        if Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(every.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(info_uid: &str, boot: &str) -> Seen {
        Seen::Info {
            info_uid: info_uid.into(),
            boot_uuid: boot.into(),
        }
    }

    #[test]
    fn no_info_means_the_uid_is_free() {
        assert_eq!(UidWatch::default().observe(&Seen::Absent), Verdict::Free);
    }

    #[test]
    fn a_stale_info_left_by_a_crashed_keeper_never_decides_in_use() {
        let mut w = UidWatch::default();
        for _ in 0..10 {
            assert_eq!(w.observe(&info("i1", "old-boot")), Verdict::Undecided);
        }
        // Its lease expired meanwhile.
        assert_eq!(w.observe(&Seen::Absent), Verdict::Free);
    }

    #[test]
    fn a_republished_info_means_another_live_keeper_owns_the_uid() {
        let mut w = UidWatch::default();
        assert_eq!(w.observe(&info("i1", "other")), Verdict::Undecided);
        assert_eq!(w.observe(&info("i1", "other")), Verdict::Undecided);
        assert_eq!(
            w.observe(&info("i2", "other")),
            Verdict::InUse {
                boot_uuid: "other".into()
            }
        );
    }

    #[test]
    fn the_watch_covers_two_publish_periods() {
        assert_eq!(watch_for(Duration::from_secs(5)), Duration::from_secs(11));
    }
}
