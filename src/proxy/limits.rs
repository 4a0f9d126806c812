//! What bounds the proxy's use of the machine: the open-file limit it raises at start, the number
//! of client sessions it serves at once, and warnings a flood would otherwise repeat thousands of
//! times a second.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// File descriptors kept for everything but client sessions: the store connection, the
/// listening sockets, the journal, name lookups.
const RESERVED_FDS: u64 = 64;

/// How often a repeated warning (clients refused, accept failing) is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Raises the soft open-file limit to the hard one, as Go programs do at start (upstream's
/// proxy is one): systemd gives a service a soft limit of 1024, which a proxy holding two
/// descriptors per session reaches at about 500 sessions. Returns the soft limit now in force.
pub(crate) fn raise_open_file_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        tracing::debug!(from = soft, to = hard, "raised the open-file limit");
    }
    Ok(hard.max(soft))
}

/// The default `--max-connections`: one per descriptor left. A client waiting to speak holds one
/// descriptor and a session two, so a limit of half would refuse fresh clients behind idle ones;
/// an accept or dial that runs out of descriptors fails that one client only.
pub(crate) fn sessions_for(open_file_limit: u64) -> usize {
    let sessions = open_file_limit.saturating_sub(RESERVED_FDS);
    usize::try_from(sessions).unwrap_or(usize::MAX).max(1)
}

/// Counts the sessions in progress; a permit is held for a client's whole life in the proxy.
#[derive(Debug)]
pub(crate) struct SessionLimit {
    max: usize,
    active: AtomicUsize,
    refused: RateLimited,
}

impl SessionLimit {
    pub(crate) fn new(max: usize) -> Arc<SessionLimit> {
        Arc::new(SessionLimit {
            max,
            active: AtomicUsize::new(0),
            refused: RateLimited::for_warnings(),
        })
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A permit, or none when `max` sessions are open; refusals are warned about at most once
    /// every ten seconds, with how many there were.
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<SessionPermit> {
        let admitted = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            return Some(SessionPermit(Arc::clone(self)));
        }
        if let Some(refused) = self.refused.hit() {
            tracing::warn!(
                max_connections = self.max,
                refused,
                "too many client connections (--max-connections): closing new clients at once"
            );
        }
        None
    }

    #[cfg(test)]
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
pub(crate) struct SessionPermit(Arc<SessionLimit>);

impl Drop for SessionPermit {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Lets an event through at most once per period and counts the ones in between.
#[derive(Debug)]
pub(crate) struct RateLimited {
    every: Duration,
    last: Mutex<Option<Instant>>,
    since_last: AtomicU64,
}

impl RateLimited {
    pub(crate) fn new(every: Duration) -> RateLimited {
        RateLimited {
            every,
            last: Mutex::new(None),
            since_last: AtomicU64::new(0),
        }
    }

    /// One warning per ten seconds at most.
    pub(crate) fn for_warnings() -> RateLimited {
        RateLimited::new(WARN_EVERY)
    }

    /// Records an event; returns how many there were since the last one let through (this one
    /// included) when this one should be reported.
    pub(crate) fn hit(&self) -> Option<u64> {
        let count = self.since_last.fetch_add(1, Ordering::AcqRel) + 1;
        let mut last = crate::locks::lock(&self.last);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.every) {
            return None;
        }
        *last = Some(now);
        self.since_last.fetch_sub(count, Ordering::AcqRel);
        Some(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stop_at_the_limit_and_come_back_when_dropped() {
        let limit = SessionLimit::new(2);
        let a = limit.try_acquire();
        let b = limit.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert!(limit.try_acquire().is_none());
        drop(a);
        assert_eq!(limit.active(), 1);
        assert!(limit.try_acquire().is_some());
    }

    #[test]
    fn a_flood_is_reported_once_per_period_with_its_size() {
        let r = RateLimited::new(Duration::from_secs(3600));
        assert_eq!(r.hit(), Some(1));
        for _ in 0..999 {
            assert_eq!(r.hit(), None);
        }
        let r = RateLimited::new(Duration::ZERO);
        assert_eq!(r.hit(), Some(1));
        assert_eq!(r.hit(), Some(1));
    }

    #[test]
    fn default_sessions_leave_room_for_the_proxy_itself() {
        assert_eq!(sessions_for(1024), 960);
        assert_eq!(sessions_for(10), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // What systemd gives a service.
        setrlimit(Resource::RLIMIT_NOFILE, hard.min(1024), hard).unwrap();
        let now = raise_open_file_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((soft, now), (hard, hard));
    }
}
