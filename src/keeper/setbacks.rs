//! PURE: what the keeper remembers of its recent failures, and what it must hold back because
//! of them ([`Holds`], obeyed by the plan). The clock is passed in.
//!
//! - **Crash loop.** A PostgreSQL that the keeper restarts after every unexpected exit is
//!   reported healthy between crashes, so the sentinel's failInterval never runs out and a
//!   master that crashes over and over is never replaced. After [`CRASH_LIMIT`] unexpected
//!   exits within [`CRASH_WINDOW`] the keeper leaves PostgreSQL stopped until fewer than
//!   that many remain in the window: the keeper info then says the db is unhealthy, and the
//!   sentinel fails over after failInterval if a standby is eligible (a lone master restarts
//!   once the window has moved on).
//! - **Resync back-off.** A standby whose pg_basebackup fails retries from the same source
//!   after `base × 2^(failures-1)`, at most [`RESYNC_BACKOFF_MAX`], instead of every
//!   sleepInterval; a different source (the master moved) or a success starts over.

use super::plan::{Holds, ResyncHold};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Unexpected PostgreSQL exits within [`CRASH_WINDOW`] that make a crash loop.
pub const CRASH_LIMIT: usize = 3;
/// Far longer than failInterval (20 s by default): a loop is held long enough for the
/// sentinel to fail over, and crashes hours apart never add up.
pub const CRASH_WINDOW: Duration = Duration::from_secs(5 * 60);
/// The longest wait between two resyncs from the same source.
pub const RESYNC_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Default)]
pub struct Setbacks {
    /// When PostgreSQL exited unexpectedly, oldest first, pruned to [`CRASH_WINDOW`].
    exits: VecDeque<Instant>,
    resync: Option<ResyncFailures>,
}

#[derive(Debug)]
struct ResyncFailures {
    hold: ResyncHold,
    retry_at: Instant,
}

impl Setbacks {
    /// Records an unexpected exit. Returns when restarts resume if this exit starts (or
    /// continues) a crash loop.
    pub fn postgres_exited(&mut self, now: Instant) -> Option<Instant> {
        self.exits.push_back(now);
        self.prune(now);
        self.crash_hold_until(now)
    }

    /// Until when PostgreSQL stays stopped, if it is in a crash loop at `now`.
    pub fn crash_hold_until(&self, now: Instant) -> Option<Instant> {
        let recent: Vec<Instant> = self
            .exits
            .iter()
            .copied()
            .filter(|t| now.saturating_duration_since(*t) < CRASH_WINDOW)
            .collect();
        // The loop ends when the exit that keeps the count at the limit leaves the window.
        let n = recent.len();
        (n >= CRASH_LIMIT).then(|| recent[n - CRASH_LIMIT] + CRASH_WINDOW)
    }

    /// Unexpected exits still inside the window at `now`.
    pub fn recent_exits(&self, now: Instant) -> usize {
        self.exits
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < CRASH_WINDOW)
            .count()
    }

    /// Records a failed resync from `host:port`; `base` is the first delay (the
    /// sleepInterval). Returns how long the next resync from there waits.
    pub fn resync_failed(
        &mut self,
        host: &str,
        port: &str,
        now: Instant,
        base: Duration,
    ) -> Duration {
        let failures = match &self.resync {
            Some(r) if r.hold.host == host && r.hold.port == port => {
                r.hold.failures.saturating_add(1)
            }
            _ => 1,
        };
        let delay = resync_delay(base, failures);
        let retry_at = now + delay;
        self.resync = Some(ResyncFailures {
            hold: ResyncHold {
                host: host.to_string(),
                port: port.to_string(),
                failures,
            },
            retry_at,
        });
        delay
    }

    pub fn resync_succeeded(&mut self) {
        self.resync = None;
    }

    /// What the plan must hold back at `now`.
    pub fn holds(&self, now: Instant) -> Holds {
        Holds {
            crash_loop: self.crash_hold_until(now).is_some_and(|until| now < until),
            resync: self
                .resync
                .as_ref()
                .filter(|r| now < r.retry_at)
                .map(|r| r.hold.clone()),
        }
    }

    fn prune(&mut self, now: Instant) {
        while self
            .exits
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= CRASH_WINDOW)
        {
            self.exits.pop_front();
        }
    }
}

/// `base × 2^(failures-1)`, at most [`RESYNC_BACKOFF_MAX`] (and never less than `base`).
pub fn resync_delay(base: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << doublings)
        .min(RESYNC_BACKOFF_MAX)
        .max(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn a_single_crash_is_restarted_at_once() {
        let t0 = Instant::now();
        let mut sb = Setbacks::default();
        assert_eq!(sb.postgres_exited(t0), None);
        assert!(!sb.holds(t0).crash_loop);
        assert_eq!(sb.postgres_exited(t0 + s(30)), None);
        assert!(!sb.holds(t0 + s(30)).crash_loop);
    }

    #[test]
    fn three_crashes_in_the_window_hold_postgres_until_the_first_ages_out() {
        let t0 = Instant::now();
        let mut sb = Setbacks::default();
        sb.postgres_exited(t0);
        sb.postgres_exited(t0 + s(10));
        let until = sb.postgres_exited(t0 + s(20)).expect("a crash loop");
        assert_eq!(until, t0 + CRASH_WINDOW);
        assert!(sb.holds(t0 + s(21)).crash_loop);
        assert!(sb.holds(t0 + CRASH_WINDOW - s(1)).crash_loop);
        assert!(!sb.holds(t0 + CRASH_WINDOW).crash_loop, "restarts resume");
        // One more crash right after the restart: held again, until the second one ages out.
        let until = sb.postgres_exited(t0 + CRASH_WINDOW + s(5)).unwrap();
        assert_eq!(until, t0 + s(10) + CRASH_WINDOW);
    }

    #[test]
    fn crashes_spread_over_more_than_the_window_never_hold() {
        let t0 = Instant::now();
        let mut sb = Setbacks::default();
        for i in 0..10 {
            let at = t0 + CRASH_WINDOW / 2 * i + s(1);
            assert_eq!(sb.postgres_exited(at), None, "crash {i}");
        }
        assert!(sb.recent_exits(t0 + CRASH_WINDOW * 5) <= 2);
    }

    #[test]
    fn resync_failures_back_off_exponentially_up_to_the_cap() {
        let t0 = Instant::now();
        let mut sb = Setbacks::default();
        let base = s(5);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..10 {
            let retry = now + sb.resync_failed("10.0.0.2", "5432", now, base);
            delays.push((retry - now).as_secs());
            let held = sb.holds(retry - s(1)).resync.expect("held until retry");
            assert_eq!(held.host, "10.0.0.2");
            assert!(sb.holds(retry).resync.is_none(), "due at retry time");
            now = retry;
        }
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
    }

    #[test]
    fn resync_back_off_starts_over_on_success_or_a_new_source() {
        let t0 = Instant::now();
        let mut sb = Setbacks::default();
        let base = s(1);
        sb.resync_failed("a", "1", t0, base);
        sb.resync_failed("a", "1", t0, base);
        assert_eq!(sb.resync_failed("a", "1", t0, base), s(4));
        // The master moved: its first failure waits the base delay only.
        assert_eq!(sb.resync_failed("b", "1", t0, base), s(1));
        assert_eq!(sb.holds(t0).resync.unwrap().failures, 1);
        sb.resync_succeeded();
        assert_eq!(sb.holds(t0), Holds::default());
    }
}
