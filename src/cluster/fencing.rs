//! The timing rule that keeps an old master from taking writes once another may be elected.
//!
//! The sentinel declares a keeper failed `failInterval` after it last *saw* the keeper's info
//! change. An info the keeper *sent* at `t` can only be seen after `t`, whatever the two
//! machines' clocks say. So a master keeper whose last successful publication was sent at `t`
//! kills its PostgreSQL at `t + fence_after`, with `fence_after = failInterval - margin`: the
//! margin (at most 1 s) covers the kill itself, and the new master still needs a sentinel write
//! and a promotion on top of `failInterval` before it takes a write.
//!
//! Keepers publish every `publish_every` (sleepInterval, or a third of `fence_after` when that
//! is shorter), so in steady state a deadline is renewed at least two publications before it
//! expires: one publication that is slow (a request sent to an etcd member that just died
//! waits for `channel::first_attempt` before it goes elsewhere) does not fence a healthy master.
//! Under systemd the keeper's watchdog period is `fence_after - publish_every`: a frozen keeper
//! pinged last at most that long before it froze, and its last info was seen at most
//! `publish_every` before, so systemd kills it (and its PostgreSQL) before `failInterval`.
//!
//! `stolonctl init` and `update` refuse a spec where failInterval is below twice sleepInterval:
//! with less, a keeper that is one publication late is failed over, and the fence deadline
//! would expire between two healthy publications.

use super::{ClusterSpec, SpecError};
use std::time::Duration;

/// The most the fence deadline keeps from failInterval.
const MAX_MARGIN: Duration = Duration::from_secs(1);

/// Derived from the spec's sleepInterval and failInterval (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceTiming {
    /// How long after its last successful publication a master's PostgreSQL may still run.
    pub fence_after: Duration,
    /// How often a keeper publishes its info.
    pub publish_every: Duration,
    /// The keeper's systemd watchdog period.
    pub watchdog: Duration,
}

impl FenceTiming {
    pub fn new(sleep_interval: Duration, fail_interval: Duration) -> FenceTiming {
        let margin = sleep_interval.min(fail_interval / 4).min(MAX_MARGIN);
        let fence_after = fail_interval.saturating_sub(margin);
        let publish_every = sleep_interval.min(fence_after / 3);
        FenceTiming {
            fence_after,
            publish_every,
            watchdog: fence_after.saturating_sub(publish_every),
        }
    }
}

impl ClusterSpec {
    pub fn fence_timing(&self) -> FenceTiming {
        FenceTiming::new(
            self.sleep_interval().to_std(),
            self.fail_interval().to_std(),
        )
    }

    /// The timing rule of this module, checked when a spec is set or changed (not when a stored
    /// one is read: a cluster moved over from upstream must keep running).
    pub fn check_fence_timing(&self) -> Result<(), SpecError> {
        let sleep = self.sleep_interval();
        let fail = self.fail_interval();
        if fail.to_std() < sleep.to_std() * 2 {
            return Err(SpecError(format!(
                "failInterval ({fail}) must be at least twice sleepInterval ({sleep}): keepers \
                 publish every sleepInterval, and a master fences itself shortly before \
                 failInterval without a publication"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn defaults_fence_one_second_before_fail_interval() {
        let t = FenceTiming::new(5 * S, 20 * S);
        assert_eq!(t.fence_after, 19 * S);
        assert_eq!(t.publish_every, 5 * S);
        assert_eq!(t.watchdog, 14 * S);
    }

    #[test]
    fn short_intervals_publish_more_often_than_sleep_interval() {
        let t = FenceTiming::new(S, 2 * S);
        assert_eq!(t.fence_after, 1500 * MS);
        assert_eq!(t.publish_every, 500 * MS);
        assert_eq!(t.watchdog, 1000 * MS);
        let t = FenceTiming::new(2 * S, 5 * S);
        assert_eq!(t.fence_after, 4 * S);
        assert_eq!(t.publish_every, 4 * S / 3);
    }

    #[test]
    fn deadline_renewed_before_it_expires_and_before_fail_interval() {
        for (sleep_ms, fail_ms) in [(100, 200), (1000, 2000), (2000, 5000), (5000, 20000)] {
            let (sleep, fail) = (sleep_ms * MS, fail_ms * MS);
            let t = FenceTiming::new(sleep, fail);
            assert!(t.fence_after < fail, "{sleep_ms}/{fail_ms}");
            assert!(t.publish_every * 3 <= t.fence_after, "{sleep_ms}/{fail_ms}");
            assert!(t.watchdog + t.publish_every < fail, "{sleep_ms}/{fail_ms}");
            assert!(!t.watchdog.is_zero());
        }
    }

    #[test]
    fn spec_rule_refuses_fail_interval_below_twice_sleep_interval() {
        let spec = |s: &str| -> ClusterSpec { serde_json::from_str(s).unwrap() };
        assert!(spec("{}").check_fence_timing().is_ok());
        assert!(
            spec(r#"{"sleepInterval":"1s","failInterval":"2s"}"#)
                .check_fence_timing()
                .is_ok()
        );
        let e = spec(r#"{"sleepInterval":"5s","failInterval":"8s"}"#)
            .check_fence_timing()
            .unwrap_err();
        assert!(
            e.0.contains("failInterval (8s) must be at least twice"),
            "{e:?}"
        );
    }
}
