//! Keeping systemd informed while one keeper iteration runs: WATCHDOG=1 while the current step
//! is within its allowance or still making progress, STATUS= for long steps (initdb,
//! pg_basebackup with its byte counts, PostgreSQL start, stop, promotion) and, before READY=1
//! and while stopping, EXTEND_TIMEOUT_USEC so a long base backup never trips
//! TimeoutStartSec.
//!
//! The pings come from the iteration itself ([`supervise`] polls it and the ticks in one
//! future), and only while the step is alive: a step past its allowance without progress stops
//! them, so systemd restarts a keeper whose loop hangs. There is no free-running timer task.

use crate::systemd::Notifier;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often EXTEND_TIMEOUT_USEC is sent during long work, and by how much it extends: the
/// extension always outlasts the next one by a margin.
const EXTEND_EVERY: Duration = Duration::from_secs(10);
const EXTEND_BY: Duration = Duration::from_secs(30);
/// Longest gap between two status refreshes (pg_basebackup's byte counts).
const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Shortest gap between two progress statuses sent as progress is reported.
const PROGRESS_GAP: Duration = Duration::from_secs(1);

pub(super) struct Work {
    notifier: Arc<Notifier>,
    state: Mutex<State>,
}

/// What a tick or a new step must tell systemd.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tell {
    ping: bool,
    /// The status, and whether it goes out with EXTEND_TIMEOUT_USEC.
    status: Option<(String, bool)>,
    /// The step just outlived its allowance without progress.
    stalled: Option<(String, Duration)>,
}

/// The decisions, apart from the notifier and the clock.
struct State {
    /// Before READY=1 and while stopping systemd counts a start or stop timeout.
    extending: bool,
    status: Option<String>,
    /// Pings stop after this unless the step reports progress.
    alive_until: Instant,
    allowance: Duration,
    last_extend: Option<Instant>,
    last_progress_sent: Option<Instant>,
    warned: bool,
}

impl State {
    fn new(now: Instant) -> State {
        State {
            extending: true,
            status: None,
            alive_until: now,
            allowance: Duration::ZERO,
            last_extend: None,
            last_progress_sent: None,
            warned: false,
        }
    }

    fn step(&mut self, now: Instant, status: Option<String>, allowance: Duration) -> Tell {
        self.status = status;
        // A new long step gets its extension at once: the start timeout may be nearly used
        // up by waiting for the sentinel.
        self.last_extend = None;
        self.last_progress_sent = None;
        self.alive_for(now, allowance);
        Tell {
            status: self.status_to_send(now),
            ..Tell::default()
        }
    }

    /// Progress: alive for another `allowance`; the first status and then one a second go out
    /// at once, the rest with the ticks.
    fn progress(&mut self, now: Instant, status: String, allowance: Duration) -> Tell {
        self.status = Some(status);
        self.alive_for(now, allowance);
        let due = self
            .last_progress_sent
            .is_none_or(|t| now.duration_since(t) >= PROGRESS_GAP);
        if !due {
            return Tell::default();
        }
        self.last_progress_sent = Some(now);
        Tell {
            status: self.status_to_send(now),
            ..Tell::default()
        }
    }

    fn alive_for(&mut self, now: Instant, allowance: Duration) {
        self.allowance = allowance;
        self.alive_until = now + allowance;
        self.warned = false;
    }

    fn done(&mut self) {
        self.status = None;
        self.last_extend = None;
    }

    fn tick(&mut self, now: Instant) -> Tell {
        if now > self.alive_until {
            let stalled = (!self.warned).then(|| {
                self.warned = true;
                (
                    self.status
                        .clone()
                        .unwrap_or_else(|| "keeper iteration".into()),
                    self.allowance,
                )
            });
            return Tell {
                stalled,
                ..Tell::default()
            };
        }
        Tell {
            ping: true,
            status: self.status_to_send(now),
            stalled: None,
        }
    }

    fn status_to_send(&mut self, now: Instant) -> Option<(String, bool)> {
        let status = self.status.clone()?;
        let extend = self.extending
            && self
                .last_extend
                .is_none_or(|t| now.duration_since(t) >= EXTEND_EVERY);
        if extend {
            self.last_extend = Some(now);
        }
        Some((status, extend))
    }
}

impl Work {
    pub(super) fn new(notifier: Arc<Notifier>) -> Arc<Work> {
        Arc::new(Work {
            notifier,
            state: Mutex::new(State::new(Instant::now())),
        })
    }

    pub(super) fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::locks::lock(&self.state)
    }

    /// Whether long work extends systemd's start/stop timeout (before READY=1, when stopping).
    pub(super) fn set_extending(&self, on: bool) {
        self.lock().extending = on;
    }

    /// A new step that may take up to `allowance`; a long one has a `status`, shown at once.
    pub(super) fn step(&self, status: Option<String>, allowance: Duration) {
        let tell = self.lock().step(Instant::now(), status, allowance);
        self.tell(tell);
    }

    /// The step made progress: it stays alive for another `allowance` from now; `status` goes
    /// out at once or with the next tick.
    pub(super) fn progress(&self, status: String, allowance: Duration) {
        let tell = self.lock().progress(Instant::now(), status, allowance);
        self.tell(tell);
    }

    fn done(&self) {
        self.lock().done();
    }

    fn tick(&self) {
        let tell = self.lock().tick(Instant::now());
        self.tell(tell);
    }

    fn tell(&self, tell: Tell) {
        if let Some((step, allowance)) = tell.stalled
            && self.notifier.watchdog_interval().is_some()
        {
            tracing::warn!(
                step,
                ?allowance,
                "no progress within the allowance; no longer pinging the systemd watchdog"
            );
        }
        if tell.ping {
            self.notifier.watchdog();
        }
        match tell.status {
            Some((status, true)) => self.notifier.extend_timeout(EXTEND_BY, &status),
            Some((status, false)) => self.notifier.status(&status),
            None => {}
        }
    }

    fn tick_every(&self) -> Duration {
        self.notifier
            .watchdog_interval()
            .map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY))
    }
}

/// Runs `fut` (a keeper iteration, or the shutdown stop), ticking `work` meanwhile.
pub(super) async fn supervise<F: Future>(work: &Work, fut: F) -> F::Output {
    tokio::pin!(fut);
    let every = work.tick_every();
    loop {
        tokio::select! {
            biased;
            out = &mut fut => {
                work.done();
                return out;
            }
            _ = tokio::time::sleep(every) => work.tick(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn pings_within_the_allowance_then_warns_once_and_stops() {
        let t0 = Instant::now();
        let mut s = State::new(t0);
        let tell = s.step(t0, Some("initdb…".into()), 600 * MS);
        assert_eq!(
            tell.status,
            Some(("initdb…".to_string(), true)),
            "a long step extends the start timeout at once"
        );
        let t = s.tick(t0 + 500 * MS);
        assert!(t.ping);
        assert_eq!(
            t.status,
            Some(("initdb…".to_string(), false)),
            "extends every 10 s only"
        );
        let t = s.tick(t0 + 700 * MS);
        assert!(!t.ping && t.status.is_none());
        assert_eq!(t.stalled, Some(("initdb…".to_string(), 600 * MS)));
        assert_eq!(s.tick(t0 + 900 * MS), Tell::default(), "warned once");
    }

    #[test]
    fn progress_keeps_a_long_step_alive() {
        let t0 = Instant::now();
        let mut s = State::new(t0);
        s.step(t0, Some("pg_basebackup starting…".into()), 60 * 1000 * MS);
        let first = s.progress(t0 + MS, "pg_basebackup 0 MB / 20 MB".into(), 60 * 1000 * MS);
        assert_eq!(
            first.status,
            Some(("pg_basebackup 0 MB / 20 MB".to_string(), false)),
            "the first progress shows at once (the step extended just before)"
        );
        let soon = s.progress(
            t0 + 2 * MS,
            "pg_basebackup 1 MB / 20 MB".into(),
            60 * 1000 * MS,
        );
        assert_eq!(
            soon,
            Tell::default(),
            "at most one progress status a second"
        );
        for i in 1..=20u32 {
            let now = t0 + i * 50 * 1000 * MS;
            let text = format!("pg_basebackup {i} MB / 20 MB");
            let p = s.progress(now, text.clone(), 60 * 1000 * MS);
            let t = s.tick(now + 1000 * MS);
            assert!(t.ping, "progress at {i}");
            // 50 s since the last extension: the progress status carries a new one.
            assert_eq!(p.status, Some((text.clone(), true)));
            assert_eq!(t.status, Some((text, false)));
        }
    }

    #[test]
    fn no_extension_once_ready_and_quiet_steps_only_ping() {
        let t0 = Instant::now();
        let mut s = State::new(t0);
        s.extending = false;
        assert_eq!(
            s.step(t0, Some("promoting to master…".into()), 1000 * MS)
                .status,
            Some(("promoting to master…".to_string(), false))
        );
        let tell = s.step(t0, None, 1000 * MS);
        assert_eq!(tell, Tell::default());
        assert_eq!(
            s.tick(t0 + 10 * MS),
            Tell {
                ping: true,
                ..Tell::default()
            }
        );
        s.done();
        assert_eq!(s.status, None);
    }
}
